//! A recording fake of [`System`](super::System) for tests of the layers above the kernel.
