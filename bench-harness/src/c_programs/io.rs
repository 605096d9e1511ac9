//! The files of the C-program table: `c_programs.csv` (one [`CRow`] per program x allocator) and
//! `c_programs.json` (the rows plus the machine, the settings, the command lines and every
//! run), which `bench-harness report` reads back.

use std::path::Path;

use super::{CProgramsFile, CRow};
use crate::results_io;

/// The CSV's file name in the output directory.
pub const CSV_FILE: &str = "c_programs.csv";
/// The JSON's file name in the output directory.
pub const JSON_FILE: &str = "c_programs.json";

/// Writes rows as CSV.
pub fn write_csv(path: &Path, rows: &[CRow]) -> Result<(), String> {
    results_io::write_csv(path, rows)
}

/// Reads rows from CSV.
pub fn read_csv(path: &Path) -> Result<Vec<CRow>, String> {
    results_io::read_csv(path)
}

/// Writes the JSON file.
pub fn write_json(path: &Path, file: &CProgramsFile) -> Result<(), String> {
    results_io::write_json(path, file)
}

/// Reads the JSON file.
pub fn read_json(path: &Path) -> Result<CProgramsFile, String> {
    results_io::read_json(path)
}

/// Writes both files into `out`.
pub fn write_all(out: &Path, file: &CProgramsFile) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    write_csv(&out.join(CSV_FILE), &file.rows)?;
    write_json(&out.join(JSON_FILE), file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::Status;

    fn rows() -> Vec<CRow> {
        vec![
            CRow {
                program: "sort".into(),
                allocator: "mimalloc".into(),
                reps: 3,
                wall_ms: 812.5,
                wall_ms_min: 800.0,
                wall_ms_max: 900.25,
                peak_rss_bytes: 190 << 20,
                peak_rss_min_bytes: 189 << 20,
                peak_rss_max_bytes: 191 << 20,
                status: Status::Ok,
                reason: String::new(),
            },
            CRow {
                program: "python3".into(),
                allocator: "bump".into(),
                status: Status::Failed,
                reason: "killed by signal 9, \"oom\"".into(),
                ..CRow::default()
            },
        ]
    }

    #[test]
    fn csv_has_the_documented_columns_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CSV_FILE);
        write_csv(&path, &rows()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(
            "program,allocator,reps,wall_ms,wall_ms_min,wall_ms_max,peak_rss_bytes,peak_rss_min_bytes,peak_rss_max_bytes,status,reason\n"
        ), "{text}");
        assert!(text.contains(",failed,"));
        assert_eq!(read_csv(&path).unwrap(), rows());
    }

    #[test]
    fn json_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let file = CProgramsFile {
            rows: rows(),
            ..CProgramsFile::default()
        };
        write_all(dir.path(), &file).unwrap();
        assert_eq!(read_json(&dir.path().join(JSON_FILE)).unwrap(), file);
    }
}
