//! The `redis` program of the C-program table: the driver the harness re-executes itself as
//! (`bench-harness redis-driver`, hidden) to measure `redis-server` under an allocator. It
//! starts the server with the library from [`PRELOAD_VAR`] in `LD_PRELOAD` on a free loopback
//! port (127.0.0.1 only, no persistence), drives it with `redis-benchmark -q` (not preloaded:
//! it is the client) doing pipelined SET, GET, LPUSH and LRANGE_100 over random keys, then
//! writes a known key set into database 1 and reads it back, reads the server's peak RSS
//! (`VmHWM`) and shuts it down with `SHUTDOWN NOSAVE`. It prints what it checked (the same
//! lines under every allocator) and writes a [`SelfMeasured`] (the benchmark's wall time, the
//! server's peak RSS) to the file in [`MEASURE_VAR`].
//!
//! Everything is bounded in time, and the server is always killed: on any error (a guard kills
//! it on drop), and if the driver itself is killed (the server and the benchmark get
//! `PR_SET_PDEATHSIG`).

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::measure::{SelfMeasured, MEASURE_VAR, PRELOAD_VAR};

/// The benchmark's tests (`redis-benchmark -t`).
pub const TESTS: &str = "set,get,lpush,lrange_100";
/// Requests per pipeline (`-P`).
pub const PIPELINE: u32 = 16;
/// Random keys drawn from this many (`-r`).
pub const KEYSPACE: u32 = 100_000;
/// SET/GET value size in bytes (`-d`).
pub const VALUE_SIZE: u32 = 64;
/// Parallel client connections (`-c`).
pub const CLIENTS: u32 = 50;
/// Keys of the written-and-read-back check.
pub const CHECK_KEYS: usize = 20_000;

/// What the driver is asked to do.
#[derive(Clone, Debug)]
pub struct DriverArgs {
    /// `redis-server`.
    pub server: PathBuf,
    /// `redis-benchmark`.
    pub benchmark: PathBuf,
    /// Requests per test (`-n`).
    pub requests: u64,
    /// The whole drive's time budget; past it the server and benchmark are killed.
    pub timeout: Duration,
    /// The library to preload into the server (`None`: system malloc).
    pub preload: Option<PathBuf>,
    /// Where to write the [`SelfMeasured`].
    pub measure: PathBuf,
}

impl DriverArgs {
    /// The preload library and the measurement file from the environment the harness's meter
    /// gives a self-measuring program ([`PRELOAD_VAR`], [`MEASURE_VAR`]), with the rest.
    pub fn from_env(
        server: PathBuf,
        benchmark: PathBuf,
        requests: u64,
        timeout: Duration,
    ) -> Result<DriverArgs, String> {
        let preload = std::env::var_os(PRELOAD_VAR)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let measure = std::env::var_os(MEASURE_VAR)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| {
                format!(
                    "{MEASURE_VAR} is not set (the driver is run by `bench-harness c-programs`)"
                )
            })?;
        Ok(DriverArgs {
            server,
            benchmark,
            requests,
            timeout,
            preload,
            measure,
        })
    }
}

/// The server process, killed and reaped when dropped unless it already exited.
struct Server {
    child: Child,
    exited: Option<ExitStatus>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Makes `cmd`'s process die with the driver (`PR_SET_PDEATHSIG`), so a driver killed by the
/// meter's watchdog leaves nothing behind.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the closure runs in the child between fork and exec and calls only `prctl`, which
    // is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A free TCP port on 127.0.0.1 (the kernel's choice; free when asked).
fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| format!("cannot find a free port on 127.0.0.1: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("cannot read the free port: {e}"))
}

/// A reply of the Redis protocol (RESP2).
#[derive(Clone, Debug, PartialEq)]
enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

/// A connection to the server speaking RESP2, every read bounded by a timeout.
struct Conn {
    read: BufReader<TcpStream>,
    write: BufWriter<TcpStream>,
}

impl Conn {
    fn open(port: u16, timeout: Duration) -> Result<Conn, String> {
        let s = TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), timeout)
            .map_err(|e| format!("cannot connect to redis-server on 127.0.0.1:{port}: {e}"))?;
        let io = |e: std::io::Error| format!("socket: {e}");
        s.set_read_timeout(Some(timeout)).map_err(io)?;
        s.set_write_timeout(Some(timeout)).map_err(io)?;
        let w = s.try_clone().map_err(io)?;
        Ok(Conn {
            read: BufReader::new(s),
            write: BufWriter::new(w),
        })
    }

    /// Queues one command (sent on [`Conn::flush`]).
    fn send(&mut self, args: &[&[u8]]) -> Result<(), String> {
        let mut buf = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            buf.extend_from_slice(a);
            buf.extend_from_slice(b"\r\n");
        }
        self.write
            .write_all(&buf)
            .map_err(|e| format!("writing to redis-server: {e}"))
    }

    fn flush(&mut self) -> Result<(), String> {
        self.write
            .flush()
            .map_err(|e| format!("writing to redis-server: {e}"))
    }

    fn line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        let n = self
            .read
            .read_line(&mut line)
            .map_err(|e| format!("reading from redis-server: {e}"))?;
        if n == 0 {
            return Err("redis-server closed the connection".into());
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }

    fn reply(&mut self) -> Result<Reply, String> {
        let line = self.line()?;
        let (kind, rest) = line.split_at(line.len().min(1));
        let int = |s: &str| {
            s.parse::<i64>()
                .map_err(|_| format!("bad reply from redis-server: {line:?}"))
        };
        Ok(match kind {
            "+" => Reply::Status(rest.into()),
            "-" => Reply::Error(rest.into()),
            ":" => Reply::Int(int(rest)?),
            "$" => match usize::try_from(int(rest)?) {
                Err(_) => Reply::Bulk(None),
                Ok(len) => {
                    let mut data = vec![0; len + 2];
                    self.read
                        .read_exact(&mut data)
                        .map_err(|e| format!("reading from redis-server: {e}"))?;
                    data.truncate(len);
                    Reply::Bulk(Some(data))
                }
            },
            "*" => {
                let n = int(rest)?;
                let mut items = Vec::new();
                for _ in 0..n.max(0) {
                    items.push(self.reply()?);
                }
                Reply::Array(items)
            }
            _ => return Err(format!("bad reply from redis-server: {line:?}")),
        })
    }

    /// Sends one command and returns its reply.
    fn call(&mut self, args: &[&[u8]]) -> Result<Reply, String> {
        self.send(args)?;
        self.flush()?;
        self.reply()
    }

    /// Sends one command whose reply must be an integer.
    fn int(&mut self, args: &[&[u8]]) -> Result<i64, String> {
        match self.call(args)? {
            Reply::Int(n) => Ok(n),
            r => Err(format!("{}: unexpected reply {r:?}", show(args))),
        }
    }
}

fn show(args: &[&[u8]]) -> String {
    args.iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The value of check key `i`: 1 to 1,500 bytes, its contents fixed by `i`.
fn check_value(i: usize) -> Vec<u8> {
    let len = 1 + (i * 7919) % 1500;
    (0..len).map(|j| b'a' + ((i + j * 31) % 26) as u8).collect()
}

/// FNV-1a over `bytes`, continuing from `h`.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Writes [`CHECK_KEYS`] keys (and a list) into database 1, pipelined, reads them back and
/// returns the report line; `Err` if anything read back differs from what was written.
fn check_keys(conn: &mut Conn) -> Result<String, String> {
    match conn.call(&[b"SELECT", b"1"])? {
        Reply::Status(s) if s == "OK" => {}
        r => return Err(format!("SELECT 1: unexpected reply {r:?}")),
    }
    const BATCH: usize = 1000;
    let mut want = 0xcbf2_9ce4_8422_2325u64;
    for start in (0..CHECK_KEYS).step_by(BATCH) {
        let end = (start + BATCH).min(CHECK_KEYS);
        for i in start..end {
            let key = format!("check:{i}");
            let value = check_value(i);
            want = fnv(want, &value);
            conn.send(&[b"SET", key.as_bytes(), &value])?;
            conn.send(&[b"RPUSH", b"check:list", &value[..value.len().min(40)]])?;
        }
        conn.flush()?;
        for _ in start..end {
            match (conn.reply()?, conn.reply()?) {
                (Reply::Status(s), Reply::Int(_)) if s == "OK" => {}
                r => return Err(format!("SET/RPUSH: unexpected replies {r:?}")),
            }
        }
    }
    let mut got = 0xcbf2_9ce4_8422_2325u64;
    for start in (0..CHECK_KEYS).step_by(BATCH) {
        let end = (start + BATCH).min(CHECK_KEYS);
        for i in start..end {
            conn.send(&[b"GET", format!("check:{i}").as_bytes()])?;
        }
        conn.flush()?;
        for i in start..end {
            match conn.reply()? {
                Reply::Bulk(Some(v)) if v == check_value(i) => got = fnv(got, &v),
                r => {
                    return Err(format!(
                        "GET check:{i} returned something else than was written: {:?}",
                        match r {
                            Reply::Bulk(Some(v)) => String::from_utf8_lossy(&v).into_owned(),
                            other => format!("{other:?}"),
                        }
                    ))
                }
            }
        }
    }
    let dbsize = conn.int(&[b"DBSIZE"])?;
    let llen = conn.int(&[b"LLEN", b"check:list"])?;
    let range = match conn.call(&[b"LRANGE", b"check:list", b"0", b"99"])? {
        Reply::Array(items) => items.len(),
        r => return Err(format!("LRANGE: unexpected reply {r:?}")),
    };
    if got != want || dbsize != CHECK_KEYS as i64 + 1 || llen != CHECK_KEYS as i64 {
        return Err(format!(
            "read back: checksum {got:016x} (wrote {want:016x}), DBSIZE {dbsize}, LLEN {llen}"
        ));
    }
    Ok(format!(
        "check keys {CHECK_KEYS} dbsize {dbsize} llen {llen} lrange {range} checksum {got:016x}"
    ))
}

/// The peak RSS (`VmHWM`) of process `pid`, bytes.
fn vm_hwm(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| format!("{path}: no VmHWM line"))
}

/// Whether process `pid` has `lib` mapped (the preload really happened).
fn has_mapped(pid: u32, lib: &Path) -> Result<bool, String> {
    let path = format!("/proc/{pid}/maps");
    let maps = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let lib = std::fs::canonicalize(lib).unwrap_or_else(|_| lib.to_path_buf());
    Ok(maps.contains(&*lib.to_string_lossy()))
}

/// Waits for `child` to exit until `deadline`; kills it past that.
fn wait_until(child: &mut Child, deadline: Instant, what: &str) -> Result<ExitStatus, String> {
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Ok(s),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what} did not finish in time (killed)"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("waiting for {what}: {e}")),
        }
    }
}

/// Starts the server on `port` with `preload` (if any) and waits until it answers PING.
fn start_server(args: &DriverArgs, port: u16, preload: Option<&Path>) -> Result<Server, String> {
    let mut cmd = Command::new(&args.server);
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .args(["--protected-mode", "yes", "--databases", "2"])
        .args(["--logfile", "", "--loglevel", "warning"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // The loader's "cannot be preloaded" and any crash report reach the meter's stderr file.
        .stderr(Stdio::inherit())
        .env_remove(PRELOAD_VAR)
        .env_remove(MEASURE_VAR);
    match preload {
        Some(lib) => cmd.env("LD_PRELOAD", lib),
        None => cmd.env_remove("LD_PRELOAD"),
    };
    die_with_parent(&mut cmd);
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", args.server.display()))?;
    let mut server = Server {
        child,
        exited: None,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(s)) = server.child.try_wait() {
            server.exited = Some(s);
            return Err(format!("redis-server exited at start ({s})"));
        }
        let ready = Conn::open(port, Duration::from_secs(2))
            .and_then(|mut c| c.call(&[b"PING"]))
            .is_ok_and(|r| r == Reply::Status("PONG".into()));
        if ready {
            return Ok(server);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "redis-server did not answer on 127.0.0.1:{port} within 10 s"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the whole drive and returns the lines to print; writes the measurement to
/// `args.measure`.
pub fn drive(args: &DriverArgs) -> Result<String, String> {
    let deadline = Instant::now() + args.timeout;
    let (preload, measure) = (&args.preload, &args.measure);
    let port = free_port()?;
    let mut server = start_server(args, port, preload.as_deref())?;
    let pid = server.child.id();
    if let Some(lib) = &preload {
        if !has_mapped(pid, lib)? {
            return Err(format!(
                "{} cannot be preloaded: redis-server does not have it mapped",
                lib.display()
            ));
        }
    }

    // The benchmark (the client: never preloaded).
    let bench_out = measure.with_extension("benchmark.txt");
    let out_file =
        std::fs::File::create(&bench_out).map_err(|e| format!("{}: {e}", bench_out.display()))?;
    let mut cmd = Command::new(&args.benchmark);
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-q",
        "-t",
        TESTS,
    ])
    .args(["-P", &PIPELINE.to_string(), "-r", &KEYSPACE.to_string()])
    .args(["-d", &VALUE_SIZE.to_string(), "-c", &CLIENTS.to_string()])
    .args(["-n", &args.requests.to_string()])
    .env_remove("LD_PRELOAD")
    .stdin(Stdio::null())
    .stdout(out_file)
    .stderr(Stdio::null());
    die_with_parent(&mut cmd);
    let started = Instant::now();
    let mut bench = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", args.benchmark.display()))?;
    let status = wait_until(&mut bench, deadline, "redis-benchmark")?;
    let wall = started.elapsed();
    let text = std::fs::read_to_string(&bench_out).unwrap_or_default();
    let _ = std::fs::remove_file(&bench_out);
    if !status.success() {
        return Err(format!("redis-benchmark failed ({status})"));
    }
    let mut lines = vec![format!(
        "redis-benchmark -t {TESTS} -n {}: done",
        args.requests
    )];
    for test in ["SET", "GET", "LPUSH", "LRANGE_100"] {
        let finished = text
            .split(['\r', '\n'])
            .any(|l| l.starts_with(test) && l.contains("requests per second"));
        if !finished {
            return Err(format!(
                "redis-benchmark did not report test {test} (the server failed?)"
            ));
        }
    }

    let mut conn = Conn::open(port, Duration::from_secs(30))?;
    // LPUSH ran at least n times, and n more to fill the list LRANGE reads (a few more with
    // pipelining, as many as the timing lets through: not printed, so the output stays fixed).
    let llen = conn.int(&[b"LLEN", b"mylist"])?;
    let pushed = 2 * i64::try_from(args.requests).unwrap_or(i64::MAX);
    if llen < pushed {
        return Err(format!(
            "the benchmark's list holds {llen} elements, fewer than the {pushed} pushed"
        ));
    }
    lines.push(format!("benchmark list holds at least {pushed} elements"));
    lines.push(check_keys(&mut conn)?);
    let peak_rss_bytes = vm_hwm(pid)?;

    // A clean shutdown: the server must exit by itself, with status 0.
    conn.send(&[b"SHUTDOWN", b"NOSAVE"])?;
    conn.flush()?;
    let _ = conn.reply(); // The connection closes without a reply.
    let stop = deadline.min(Instant::now() + Duration::from_secs(10));
    let status = wait_until(&mut server.child, stop, "redis-server's shutdown")?;
    server.exited = Some(status);
    if !status.success() {
        return Err(format!("redis-server ended with {status} at shutdown"));
    }
    lines.push("shutdown clean".into());

    let m = SelfMeasured {
        wall_ms: (wall.as_secs_f64() * 1e6).round() / 1e3,
        peak_rss_bytes,
    };
    let json = serde_json::to_string(&m).map_err(|e| e.to_string())?;
    std::fs::write(measure, json).map_err(|e| format!("{}: {e}", measure.display()))?;
    Ok(lines.join("\n") + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_values_are_fixed_and_varied() {
        assert_eq!(check_value(3), check_value(3));
        assert_ne!(check_value(3).len(), check_value(4).len());
        assert!((0..CHECK_KEYS).all(|i| (1..=1500).contains(&check_value(i).len())));
    }

    #[test]
    fn fnv_is_fnv1a() {
        // FNV-1a 64 of "a".
        assert_eq!(fnv(0xcbf2_9ce4_8422_2325, b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn drives_redis_and_leaves_no_server() {
        let (Some(server), Some(benchmark)) = (
            super::super::programs::find_on_path("redis-server"),
            super::super::programs::find_on_path("redis-benchmark"),
        ) else {
            eprintln!("redis-server or redis-benchmark not installed: skipped");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let args = DriverArgs {
            server,
            benchmark,
            requests: 500,
            timeout: Duration::from_secs(60),
            preload: None,
            measure: dir.path().join("m.json"),
        };
        let out = drive(&args).unwrap();
        assert!(out.contains("check keys 20000 dbsize 20001"), "{out}");
        assert!(out.ends_with("shutdown clean\n"), "{out}");
        let m: SelfMeasured =
            serde_json::from_str(&std::fs::read_to_string(&args.measure).unwrap()).unwrap();
        assert!(m.wall_ms > 0.0 && m.peak_rss_bytes > 1 << 20, "{m:?}");
        // A library that does not load is an error, and the server is gone afterwards.
        let bad = DriverArgs {
            preload: Some(dir.path().join("no-such-lib.so")),
            ..args
        };
        let e = drive(&bad).unwrap_err();
        assert!(e.contains("cannot be preloaded"), "{e}");
    }
}
