//! Analytics over a series (SPEC §5). Being written.
