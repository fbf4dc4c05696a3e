//! `OperationOutcome`: how every error and warning is told to a FHIR client.

use serde_json::{Value, json};

/// Issue severity (FHIR `IssueSeverity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueSeverity {
    Fatal,
    Error,
    Warning,
    Information,
}

impl IssueSeverity {
    pub fn code(self) -> &'static str {
        match self {
            IssueSeverity::Fatal => "fatal",
            IssueSeverity::Error => "error",
            IssueSeverity::Warning => "warning",
            IssueSeverity::Information => "information",
        }
    }
}

/// Issue type (a subset of FHIR `IssueType` that Socle emits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueType {
    Invalid,
    Structure,
    Required,
    Value,
    Invariant,
    Security,
    /// Some information was not returned (business rules, consent, privacy, access).
    Suppressed,
    Login,
    Forbidden,
    Processing,
    NotSupported,
    Duplicate,
    MultipleMatches,
    NotFound,
    Deleted,
    TooLong,
    Conflict,
    Exception,
    Informational,
    TooCostly,
    Transient,
}

impl IssueType {
    pub fn code(self) -> &'static str {
        match self {
            IssueType::Invalid => "invalid",
            IssueType::Structure => "structure",
            IssueType::Required => "required",
            IssueType::Value => "value",
            IssueType::Invariant => "invariant",
            IssueType::Security => "security",
            IssueType::Suppressed => "suppressed",
            IssueType::Login => "login",
            IssueType::Forbidden => "forbidden",
            IssueType::Processing => "processing",
            IssueType::NotSupported => "not-supported",
            IssueType::Duplicate => "duplicate",
            IssueType::MultipleMatches => "multiple-matches",
            IssueType::NotFound => "not-found",
            IssueType::Deleted => "deleted",
            IssueType::TooLong => "too-long",
            IssueType::Conflict => "conflict",
            IssueType::Exception => "exception",
            IssueType::Informational => "informational",
            IssueType::TooCostly => "too-costly",
            IssueType::Transient => "transient",
        }
    }
}

/// One issue of an outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    pub severity: IssueSeverity,
    pub code: IssueType,
    pub diagnostics: String,
    /// FHIRPath-ish location of the problem (`Bundle.entry[3].resource`), if known.
    pub expression: Option<String>,
}

/// A list of issues, rendered as a FHIR `OperationOutcome` resource.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OperationOutcome {
    pub issues: Vec<Issue>,
}

impl OperationOutcome {
    pub fn new() -> Self {
        Self::default()
    }

    /// An outcome with one issue.
    pub fn single(
        severity: IssueSeverity,
        code: IssueType,
        diagnostics: impl Into<String>,
    ) -> Self {
        let mut o = Self::new();
        o.push(severity, code, diagnostics);
        o
    }

    pub fn error(code: IssueType, diagnostics: impl Into<String>) -> Self {
        Self::single(IssueSeverity::Error, code, diagnostics)
    }

    pub fn push(
        &mut self,
        severity: IssueSeverity,
        code: IssueType,
        diagnostics: impl Into<String>,
    ) {
        self.issues.push(Issue {
            severity,
            code,
            diagnostics: diagnostics.into(),
            expression: None,
        });
    }

    pub fn push_at(
        &mut self,
        severity: IssueSeverity,
        code: IssueType,
        diagnostics: impl Into<String>,
        expression: impl Into<String>,
    ) {
        self.issues.push(Issue {
            severity,
            code,
            diagnostics: diagnostics.into(),
            expression: Some(expression.into()),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.issues.is_empty()
    }

    /// The FHIR JSON form.
    pub fn to_json(&self) -> Value {
        let issues: Vec<Value> = if self.issues.is_empty() {
            vec![
                json!({"severity": "information", "code": "informational", "diagnostics": "Succès"}),
            ]
        } else {
            self.issues
                .iter()
                .map(|i| {
                    let mut v = json!({
                        "severity": i.severity.code(),
                        "code": i.code.code(),
                        "diagnostics": i.diagnostics,
                    });
                    if let Some(e) = &i.expression {
                        v["expression"] = json!([e]);
                    }
                    v
                })
                .collect()
        };
        json!({"resourceType": "OperationOutcome", "issue": issues})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_issues() {
        let mut o = OperationOutcome::error(IssueType::NotFound, "Patient/1 introuvable");
        o.push_at(
            IssueSeverity::Warning,
            IssueType::Value,
            "x",
            "Patient.name",
        );
        let j = o.to_json();
        assert_eq!(j["resourceType"], "OperationOutcome");
        assert_eq!(j["issue"][0]["code"], "not-found");
        assert_eq!(j["issue"][1]["expression"][0], "Patient.name");
    }
}
