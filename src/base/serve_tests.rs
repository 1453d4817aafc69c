//! Unit tests of the HTTP/1 server are end-to-end (tests/http_limits_e2e.rs).
