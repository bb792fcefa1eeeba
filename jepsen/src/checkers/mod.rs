//! Checkers other than linearizability, each a pure function of a history.
