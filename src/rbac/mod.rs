//! rbac (in progress).
