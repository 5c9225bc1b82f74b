//! The path syntax of `translate[].path`: `spec.containers[*].image`, `[2]`, and bracketed keys
//! such as `metadata.annotations["example.com/key"]`. The empty path means the whole change set.

/// One step of a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// `.name`
    Field(String),
    /// `["key"]`: a map key that may contain dots or brackets.
    Key(String),
    /// `[3]`
    Index(usize),
    /// `[*]`: every element of a list or value of a map.
    Each,
}

/// Parses a path; the error says what is wrong where.
pub fn parse(path: &str) -> Result<Vec<Segment>, String> {
    let chars: Vec<char> = path.chars().collect();
    let mut segments = Vec::new();
    let mut i = 0;
    let mut expect_field = true;
    while i < chars.len() {
        match chars[i] {
            '[' => {
                let close = chars[i..]
                    .iter()
                    .position(|c| *c == ']')
                    .map(|p| p + i)
                    .ok_or_else(|| format!("unclosed '[' at position {i}"))?;
                let inner: String = chars[i + 1..close].iter().collect();
                let inner = inner.trim();
                if inner == "*" {
                    segments.push(Segment::Each);
                } else if let Some(quoted) = inner
                    .strip_prefix('"')
                    .and_then(|s| s.strip_suffix('"'))
                    .or_else(|| inner.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
                {
                    segments.push(Segment::Key(quoted.to_string()));
                } else if let Ok(index) = inner.parse::<usize>() {
                    segments.push(Segment::Index(index));
                } else {
                    return Err(format!(
                        "[{inner}] must be [*], a list index like [0] or a quoted key like [\"example.com/key\"]"
                    ));
                }
                i = close + 1;
                expect_field = false;
            }
            '.' => {
                if expect_field {
                    return Err(format!("empty field name at position {i}"));
                }
                expect_field = true;
                i += 1;
            }
            _ => {
                let start = i;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    if chars[i] == ']' {
                        return Err(format!("unexpected ']' at position {i}"));
                    }
                    i += 1;
                }
                let name: String = chars[start..i].iter().collect();
                if !expect_field {
                    return Err(format!("missing '.' before {name:?}"));
                }
                segments.push(Segment::Field(name));
                expect_field = false;
            }
        }
    }
    if expect_field && !chars.is_empty() {
        return Err("a path may not end with '.'".into());
    }
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_paths() {
        assert_eq!(
            parse("spec.containers[*].image").unwrap(),
            vec![
                Segment::Field("spec".into()),
                Segment::Field("containers".into()),
                Segment::Each,
                Segment::Field("image".into())
            ]
        );
        assert_eq!(
            parse(r#"metadata.annotations["example.com/key"]"#).unwrap(),
            vec![
                Segment::Field("metadata".into()),
                Segment::Field("annotations".into()),
                Segment::Key("example.com/key".into())
            ]
        );
        assert_eq!(parse("spec.ports[2].name").unwrap()[2], Segment::Index(2));
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn invalid_paths() {
        for bad in ["spec..image", ".spec", "spec.", "spec.containers[x]", "spec.containers[*", "a]b", "a[0]b"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
