//! Validation at the edge (DESIGN.md §10): every rule broken by an incoming
//! message is collected as a [`FieldViolation`] naming the field and the rule,
//! and the whole set is answered as one `INVALID_ARGUMENT`.

use std::fmt;

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field in the request, e.g. `location.istat_code`.
    pub field: String,
    /// The rule, phrased for the caller, e.g. `must be 3..=200 characters`.
    pub rule: String,
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.rule)
    }
}

/// Every rule a request broke.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Violations(pub Vec<FieldViolation>);

impl Violations {
    /// No violations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a broken rule.
    pub fn add(&mut self, field: impl Into<String>, rule: impl Into<String>) {
        self.0.push(FieldViolation {
            field: field.into(),
            rule: rule.into(),
        });
    }

    /// Records `rule` when `ok` is false.
    pub fn check(&mut self, ok: bool, field: impl Into<String>, rule: impl Into<String>) {
        if !ok {
            self.add(field, rule);
        }
    }

    /// Checks a string's length in characters is within `min..=max`.
    pub fn length(&mut self, field: &str, value: &str, min: usize, max: usize) {
        let n = value.chars().count();
        if n < min || n > max {
            let rule = if min == 0 {
                format!("must be at most {max} characters (got {n})")
            } else if n == 0 {
                "is required".to_string()
            } else {
                format!("must be {min}..={max} characters (got {n})")
            };
            self.add(field, rule);
        }
    }

    /// Checks that a string holds no control characters other than newlines
    /// and tabs.
    pub fn printable(&mut self, field: &str, value: &str) {
        if value
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
        {
            self.add(field, "must not contain control characters");
        }
    }

    /// Whether nothing was broken.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when nothing was broken, the violations otherwise.
    ///
    /// # Errors
    /// The violations collected.
    pub fn into_result(self) -> Result<(), Violations> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Violations {}

impl From<Violations> for tonic::Status {
    fn from(v: Violations) -> Self {
        tonic::Status::invalid_argument(format!("invalid request: {v}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_every_violation_with_field_and_rule() {
        let mut v = Violations::new();
        v.length("subject", "", 3, 200);
        v.length("subject", "ab", 3, 200);
        v.length("address", &"x".repeat(201), 0, 200);
        v.printable("text", "a\u{0}b");
        let status: tonic::Status = v.clone().into();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(v.0.len(), 4);
        assert!(status.message().contains("subject: is required"));
        assert!(
            status
                .message()
                .contains("subject: must be 3..=200 characters (got 2)")
        );
        assert!(
            status
                .message()
                .contains("address: must be at most 200 characters (got 201)")
        );
    }
}
