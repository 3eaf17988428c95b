//! `sockwarden audit`: verify, show and summarize the audit trail.
