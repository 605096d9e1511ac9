//! Parsing of the command line's selections (`--allocators`, `--workloads`, `--threads`), with
//! errors that list the valid choices.

/// Parses a comma-separated list of names, each of which must be in `valid` (`what` names the
/// kind in the error). `None`, an empty string or `all` selects every valid name, in table order.
pub fn parse_names(arg: Option<&str>, valid: &[&str], what: &str) -> Result<Vec<String>, String> {
    let arg = arg.map(str::trim).unwrap_or("");
    if arg.is_empty() || arg == "all" {
        return Ok(valid.iter().map(|s| s.to_string()).collect());
    }
    let mut out: Vec<String> = Vec::new();
    for name in arg.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !valid.contains(&name) {
            return Err(format!(
                "unknown {what} '{name}'; valid {what}s: {}",
                valid.join(", ")
            ));
        }
        if !out.iter().any(|o| o == name) {
            out.push(name.to_string());
        }
    }
    // Keep table order, so the report's columns do not depend on how the list was typed.
    out.sort_by_key(|n| valid.iter().position(|v| v == n));
    Ok(out)
}

/// Parses a comma-separated list of thread counts (each at least 1).
pub fn parse_threads(arg: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in arg.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match part.parse::<usize>() {
            Ok(n) if n >= 1 => {
                if !out.contains(&n) {
                    out.push(n)
                }
            }
            _ => {
                return Err(format!(
                    "invalid thread count '{part}': expected a number >= 1"
                ))
            }
        }
    }
    if out.is_empty() {
        return Err("no thread count given".to_string());
    }
    out.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &[&str] = &["a", "b", "c"];

    #[test]
    fn all_by_default() {
        assert_eq!(parse_names(None, VALID, "x").unwrap(), ["a", "b", "c"]);
        assert_eq!(
            parse_names(Some("all"), VALID, "x").unwrap(),
            ["a", "b", "c"]
        );
    }

    #[test]
    fn subset_in_table_order_without_duplicates() {
        assert_eq!(parse_names(Some("c, a,c"), VALID, "x").unwrap(), ["a", "c"]);
    }

    #[test]
    fn unknown_name_lists_valid_ones() {
        let e = parse_names(Some("a,zz"), VALID, "allocator").unwrap_err();
        assert!(e.contains("unknown allocator 'zz'"), "{e}");
        assert!(e.contains("a, b, c"), "{e}");
    }

    #[test]
    fn threads() {
        assert_eq!(parse_threads("4,1,2,2").unwrap(), [1, 2, 4]);
        assert!(parse_threads("0").is_err());
        assert!(parse_threads("x").is_err());
        assert!(parse_threads("").is_err());
    }
}
