//! The policy engine: a pure function from a snapshot, the policies, the action history and the clock to a plan.
