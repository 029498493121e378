//! Rate limits with real servers and clients.
