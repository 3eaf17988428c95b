//! Signalling a process through a pidfd, after checking its start time still matches.
