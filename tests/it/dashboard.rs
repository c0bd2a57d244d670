//! The dashboard in headless Chromium: being written.
