//! What a run tells the operator: the report, rendered as text or JSON.

pub mod report;
