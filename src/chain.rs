//! An error with its causes, in one line: "error connecting to server: Connection refused (os
//! error 111)" rather than the outermost layer alone, so that a failure names what to fix.

/// `e` and every error in its `source()` chain, joined by ": ". A cause whose text the layer
/// above already shows is not repeated.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("wraps: {0}")]
    struct Echo(#[source] std::io::Error);

    #[test]
    fn joins_causes_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(chain(&Outer(io())), "outer: refused");
        assert_eq!(chain(&Echo(io())), "wraps: refused");
    }
}
