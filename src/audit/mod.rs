//! The audit trail: append-only, hash-chained JSON Lines with an intent before and an outcome after every action.
