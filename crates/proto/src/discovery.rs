//! The configuration stream between the control plane and the proxies (being built).
