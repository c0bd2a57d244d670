//! Access and browser safety (SPEC §9), as one axum middleware in front of every route.
//!
//! In order, each request passes:
//! 1. the Host check: the `Host` must be an IP literal, `localhost` (or a name under
//!    `.localhost`), or a name given with `--allowed-host`. A DNS-rebinding page reaches the
//!    server under the attacker's name, so it fails here; an IP literal cannot be rebound.
//! 2. the Origin check, on state-changing methods: a browser always sends `Origin` with
//!    them, and one that is not this server's own (same host and port as the `Host`) is a
//!    cross-site request, refused before the body is read. No `Origin` (curl, gateways,
//!    Telegraf) passes.
//! 3. the token check, with `--auth`: the route's role (see [`need`]) against the roles of
//!    the token presented. Tokens are kept as SHA-256 hashes and compared in constant time.
//!
//! The credentials that InfluxDB clients put in the query (`u`, `p`) are removed from the
//! request before it goes on, so that nothing after this layer can log or echo them.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::uri::{Authority, PathAndQuery};
use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};

/// A role a token can have (SPEC §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Every GET but `/healthz` (which is always open), and `POST /analytics`.
    Read,
    /// Readings in: `POST /ingest`, `/write`, `/api/v2/write`.
    Write,
    /// Job status changes: `POST /status`.
    Operate,
    /// Alert rules (every non-GET under `/alerts`); an admin token also has every other role.
    Admin,
}

impl Role {
    /// The name used in the auth file and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Operate => "operate",
            Role::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Role::Read => 1,
            Role::Write => 2,
            Role::Operate => 4,
            Role::Admin => 8,
        }
    }
}

/// One token of the auth file: who it is, the hash of its secret, what it may do.
#[derive(Debug, Clone)]
pub struct TokenEntry {
    /// A name for logs and messages (never the secret).
    pub name: String,
    hash: [u8; 32],
    roles: u8,
}

impl TokenEntry {
    /// Whether this token may act in `role`; admin implies every role.
    pub fn has(&self, role: Role) -> bool {
        self.roles & (role.bit() | Role::Admin.bit()) != 0
    }
}

/// What can go wrong reading the auth file.
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    /// The file cannot be read.
    #[error("--auth {path}: {source}")]
    Read {
        /// The file as given.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML of the expected shape, or a token is invalid.
    #[error("--auth {path}: {reason}")]
    Invalid {
        /// The file as given.
        path: String,
        /// What is wrong, naming the token.
        reason: String,
    },
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    #[serde(default)]
    token: Vec<RawToken>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: String,
    hash: String,
    roles: Vec<Role>,
}

/// The tokens of an `--auth` file.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<TokenEntry>,
}

impl Tokens {
    /// Reads and checks an auth file.
    pub fn load(path: &Path) -> Result<Self, AuthFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Tokens::parse(&text).map_err(|reason| AuthFileError::Invalid {
            path: path.display().to_string(),
            reason,
        })
    }

    /// Parses the TOML of an auth file: `[[token]]` tables of `name`, `hash`, `roles`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(n) = text
            .lines()
            .position(|l| l.trim_start().starts_with(TOKEN_PREFIX))
        {
            return Err(format!(
                "line {} holds a token itself, which must never be in the file: remove that line and give the token to its client (the file keeps only the hash)",
                n + 1
            ));
        }
        // The parser's message quotes the offending line, which may hold a secret: keep only
        // where it is and what was expected.
        let file: AuthFile = toml::from_str(text).map_err(|e| match e.span() {
            Some(span) => {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!("not a valid auth file at line {line}: {}", e.message())
            }
            None => format!("not a valid auth file: {}", e.message()),
        })?;
        let mut entries: Vec<TokenEntry> = Vec::with_capacity(file.token.len());
        for t in file.token {
            if t.name.is_empty() {
                return Err("a token has an empty name".into());
            }
            let hash = parse_hash(&t.hash).map_err(|e| format!("token {:?}: {e}", t.name))?;
            if t.roles.is_empty() {
                return Err(format!("token {:?}: roles is empty", t.name));
            }
            if entries.iter().any(|e| e.name == t.name) {
                return Err(format!("token {:?} is defined twice", t.name));
            }
            if entries.iter().any(|e| e.hash == hash) {
                return Err(format!(
                    "token {:?} has the same hash as another token",
                    t.name
                ));
            }
            let roles = t.roles.iter().fold(0, |acc, r| acc | r.bit());
            entries.push(TokenEntry {
                name: t.name,
                hash,
                roles,
            });
        }
        if entries.is_empty() {
            return Err("no [[token]] in the file: make one with `millwatch token new`".into());
        }
        Ok(Tokens { entries })
    }

    /// The token whose hash matches `secret`. Every entry is compared, each in constant
    /// time, so the time taken says nothing about which entry (or how much of one) matched.
    pub fn find(&self, secret: &str) -> Option<&TokenEntry> {
        let hash: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let mut found = None;
        for e in &self.entries {
            if bool::from(e.hash.ct_eq(&hash)) {
                found = Some(e);
            }
        }
        found
    }
}

fn parse_hash(s: &str) -> Result<[u8; 32], String> {
    let hex = s
        .strip_prefix("sha256:")
        .ok_or("hash must be \"sha256:\" and 64 hex digits (see `millwatch token new`)")?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("hash must be \"sha256:\" and 64 hex digits".into());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// The `hash` line of the auth file for `secret`: `sha256:` and the hex digest. A fast hash
/// is enough because tokens are 256 random bits: there is no dictionary to try.
pub fn hash_token(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in digest.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// How every token made by `millwatch token new` starts, so that one pasted into the auth file
/// by mistake is recognised and refused without being echoed.
pub const TOKEN_PREFIX: &str = "mw_";

/// A new secret: `mw_` and 32 bytes from the operating system's random source, base64url.
pub fn new_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// Who may do what, and which names the server answers to.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The tokens of `--auth`; `None`: no token is needed.
    pub tokens: Option<Arc<Tokens>>,
    /// `--public-read`: the read role needs no token.
    pub public_read: bool,
    /// `--allowed-host` names, lower case; `*` allows any `Host`.
    pub allowed_hosts: Vec<String>,
}

/// What a request needs to pass the token check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: liveness and the dashboard's static files.
    Open,
    /// A token with this role.
    Role(Role),
    /// Any valid token: a route or method that does not exist answers 404 or 405 to a
    /// caller who proved who they are, and 401 to anyone else.
    AnyToken,
}

/// The routes that take readings, where InfluxDB clients' credentials are also accepted.
const WRITE_ROUTES: &[&str] = &["/ingest", "/write", "/api/v2/write"];

/// The role a request needs, by method and path prefix: routes added later fall under the
/// rule of their prefix (any non-GET under `/alerts` is admin).
pub fn need(method: &Method, path: &str, public_read: bool) -> Need {
    if path == "/healthz" {
        return Need::Open;
    }
    let reading = method == Method::GET || method == Method::HEAD;
    // The page and its scripts hold no data, and must load to ask for a token.
    if reading && (path == "/" || path.starts_with("/assets/")) {
        return Need::Open;
    }
    let role = if reading {
        Role::Read
    } else if path == "/alerts" || path.starts_with("/alerts/") {
        Role::Admin
    } else if method == Method::POST && WRITE_ROUTES.contains(&path) {
        Role::Write
    } else if method == Method::POST && path == "/status" {
        Role::Operate
    } else if method == Method::POST && path == "/analytics" {
        // Computes over its body only: reads nothing from the store, changes nothing.
        Role::Read
    } else {
        return Need::AnyToken;
    };
    if role == Role::Read && public_read {
        Need::Open
    } else {
        Need::Role(role)
    }
}

/// Whether a method changes state, and so must come from this server's own origin.
fn changes_state(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The host and port the request was sent to: `Host`, or the URI's authority (HTTP/2).
fn request_authority(req: &Request) -> Result<Option<Authority>, ApiError> {
    if let Some(h) = req.headers().get(header::HOST) {
        let text = h.to_str().ok().unwrap_or("");
        return text
            .parse::<Authority>()
            .ok()
            .filter(|a| !a.as_str().contains('@'))
            .map(Some)
            .ok_or_else(|| ApiError::Forbidden(format!("Host {text:?} is not a host name")));
    }
    Ok(req.uri().authority().cloned())
}

/// An `--allowed-host` value as the Host check compares it: lower case, without a trailing
/// dot or a port.
pub fn parse_allowed_host(s: &str) -> Result<String, String> {
    if s == "*" {
        return Ok(s.to_owned());
    }
    let a = s
        .parse::<Authority>()
        .ok()
        .filter(|a| !a.as_str().contains('@') && !a.host().is_empty())
        .ok_or_else(|| format!("{s:?} is not a host name"))?;
    Ok(a.host().trim_end_matches('.').to_ascii_lowercase())
}

/// The Host check: IP literals, `localhost` and `--allowed-host` names pass.
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok()
    {
        return true;
    }
    host == "localhost"
        || host.ends_with(".localhost")
        || allowed.iter().any(|a| a == "*" || *a == host)
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// Whether `origin` (the `Origin` header) is the origin of a page served from `authority`.
pub fn same_origin(origin: &str, authority: &Authority) -> bool {
    let Ok(uri) = origin.parse::<Uri>() else {
        return false;
    };
    let (Some(scheme), Some(o)) = (uri.scheme_str(), uri.authority()) else {
        return false;
    };
    let Some(default) = default_port(scheme) else {
        return false;
    };
    o.host().eq_ignore_ascii_case(authority.host())
        && o.port_u16().unwrap_or(default) == authority.port_u16().unwrap_or(default)
}

/// The secret a request presents: `Authorization: Bearer` anywhere; on the write routes also
/// InfluxDB's `Authorization: Token`, HTTP Basic (Telegraf's username and password) and the
/// `p` query parameter.
fn presented(headers: &HeaderMap, uri: &Uri, write_route: bool) -> Option<String> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some(rest.to_owned());
        }
        if write_route && scheme.eq_ignore_ascii_case("token") {
            return Some(rest.to_owned());
        }
        if write_route && scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())?;
            return decoded.split_once(':').map(|(_, p)| p.to_owned());
        }
        return None;
    }
    if write_route {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(uri.query().unwrap_or("")).unwrap_or_default();
        return pairs.into_iter().find(|(k, _)| k == "p").map(|(_, v)| v);
    }
    None
}

/// The URI without the `u` and `p` query parameters, so that no later layer sees them.
fn without_credentials(uri: &Uri) -> Option<Uri> {
    let query = uri.query()?;
    let is_credential = |pair: &str| {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(pair).unwrap_or_default();
        pairs.iter().any(|(k, _)| k == "u" || k == "p")
    };
    if !query.split('&').any(is_credential) {
        return None;
    }
    let kept: Vec<&str> = query.split('&').filter(|p| !is_credential(p)).collect();
    let pq = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.parse::<PathAndQuery>().ok()?);
    Uri::from_parts(parts).ok()
}

/// The middleware: Host, then Origin, then the token; see the module's comment.
pub async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    match check(&state.access, &req) {
        Ok(()) => {}
        Err(e) => return e.into_response(),
    }
    if WRITE_ROUTES.contains(&req.uri().path())
        && let Some(clean) = without_credentials(req.uri())
    {
        *req.uri_mut() = clean;
    }
    next.run(req).await
}

fn check(access: &Access, req: &Request) -> Result<(), ApiError> {
    let authority = request_authority(req)?;
    if let Some(a) = &authority
        && !host_allowed(a.host(), &access.allowed_hosts)
    {
        let host = a.host();
        return Err(ApiError::Forbidden(format!(
            "Host {host:?} is not a name of this server: if it is, start it with --allowed-host {host}"
        )));
    }
    // Browsers that send Fetch Metadata say outright where a request comes from; this also
    // covers a browser that leaves Origin out.
    if changes_state(req.method())
        && let Some(site) = req.headers().get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return Err(ApiError::Forbidden(format!(
            "a {} from another site (Sec-Fetch-Site: {}) is refused",
            req.method(),
            site.to_str().unwrap_or("?")
        )));
    }
    if changes_state(req.method())
        && let Some(origin) = req.headers().get(header::ORIGIN)
    {
        let origin = origin.to_str().unwrap_or("");
        let ok = authority.as_ref().is_some_and(|a| same_origin(origin, a));
        if !ok {
            return Err(ApiError::Forbidden(format!(
                "Origin {origin:?} is not this server's own: a {} from another site is refused",
                req.method()
            )));
        }
    }
    let Some(tokens) = &access.tokens else {
        return Ok(());
    };
    let path = req.uri().path();
    let need = need(req.method(), path, access.public_read);
    if need == Need::Open {
        return Ok(());
    }
    let write_route = WRITE_ROUTES.contains(&path);
    let Some(secret) = presented(req.headers(), req.uri(), write_route) else {
        return Err(ApiError::Unauthorized(
            "credentials are missing: send Authorization: Bearer TOKEN".into(),
        ));
    };
    let Some(token) = tokens.find(&secret) else {
        return Err(ApiError::Unauthorized("the token is not valid".into()));
    };
    match need {
        Need::Role(role) if !token.has(role) => Err(ApiError::Forbidden(format!(
            "token {:?} lacks the role {} that {} {path} needs",
            token.name,
            role.as_str(),
            req.method()
        ))),
        _ => Ok(()),
    }
}

/// The policy of every answer: scripts, styles and connections from this origin only, no
/// inline script or style, no plugins, and no framing by any page (clickjacking).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Adds the security headers to every response of `router`.
pub fn with_security_headers<S: Clone + Send + Sync + 'static>(
    router: axum::Router<S>,
) -> axum::Router<S> {
    use tower_http::set_header::SetResponseHeaderLayer;
    router
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        // For browsers that predate frame-ancestors.
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> (Tokens, Vec<(&'static str, String)>) {
        let secrets: Vec<(&str, String)> = ["r", "w", "o", "a"]
            .into_iter()
            .map(|n| (n, new_secret().unwrap()))
            .collect();
        let roles = ["read", "write", "operate", "admin"];
        let mut text = String::new();
        for ((name, secret), role) in secrets.iter().zip(roles) {
            text.push_str(&format!(
                "[[token]]\nname = \"{name}\"\nhash = \"{}\"\nroles = [\"{role}\"]\n",
                hash_token(secret)
            ));
        }
        (Tokens::parse(&text).unwrap(), secrets)
    }

    #[test]
    fn tokens_are_found_by_their_secret_only() {
        let (t, secrets) = tokens();
        for (name, secret) in &secrets {
            assert_eq!(t.find(secret).map(|e| e.name.as_str()), Some(*name));
        }
        assert!(t.find("").is_none());
        assert!(t.find(&format!("{}x", secrets[0].1)).is_none());
        let admin = t.find(&secrets[3].1).unwrap();
        for r in [Role::Read, Role::Write, Role::Operate, Role::Admin] {
            assert!(admin.has(r), "admin implies {r:?}");
        }
        let read = t.find(&secrets[0].1).unwrap();
        assert!(read.has(Role::Read) && !read.has(Role::Write) && !read.has(Role::Operate));
    }

    #[test]
    fn hash_matches_an_independent_digest() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            hash_token("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            parse_hash(&hash_token("abc")).unwrap().to_vec(),
            Sha256::digest(b"abc").to_vec()
        );
    }

    #[test]
    fn bad_files_are_refused_naming_the_token() {
        let h = hash_token("x");
        for (text, want) in [
            ("", "no [[token]]"),
            (
                "[[token]]\nname = \"a\"\nhash = \"md5:00\"\nroles = [\"read\"]\n",
                "\"a\"",
            ),
            (
                &format!("[[token]]\nname = \"a\"\nhash = \"{h}\"\nroles = []\n"),
                "roles is empty",
            ),
            (
                &format!("[[token]]\nname = \"a\"\nhash = \"{h}\"\nroles = [\"root\"]\n"),
                "root",
            ),
            (
                &format!(
                    "[[token]]\nname = \"a\"\nhash = \"{h}\"\nroles = [\"read\"]\ntoken = \"x\"\n"
                ),
                "token",
            ),
            (
                &format!(
                    "[[token]]\nname = \"a\"\nhash = \"{h}\"\nroles = [\"read\"]\n[[token]]\nname = \"b\"\nhash = \"{h}\"\nroles = [\"read\"]\n"
                ),
                "same hash",
            ),
        ] {
            let e = Tokens::parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn roles_by_route() {
        use super::Role as R;
        use Need::*;
        let g = Method::GET;
        let p = Method::POST;
        let cases = [
            (&g, "/healthz", false, Open),
            (&p, "/healthz", false, Open),
            (&g, "/", false, Open),
            (&g, "/assets/app.js", false, Open),
            (&g, "/data", false, Role(R::Read)),
            (&g, "/data", true, Open),
            (&g, "/events", false, Role(R::Read)),
            (&g, "/metrics", false, Role(R::Read)),
            (&p, "/ingest", true, Role(R::Write)),
            (&p, "/write", false, Role(R::Write)),
            (&p, "/api/v2/write", false, Role(R::Write)),
            (&p, "/status", true, Role(R::Operate)),
            (&p, "/analytics", false, Role(R::Read)),
            (&Method::PUT, "/alerts/rules/x", true, Role(R::Admin)),
            (&Method::DELETE, "/alerts/rules/x", false, Role(R::Admin)),
            (&g, "/alerts/rules", false, Role(R::Read)),
            (&Method::DELETE, "/data", false, AnyToken),
            (&p, "/nowhere", true, AnyToken),
        ];
        for (m, path, public, want) in cases {
            assert_eq!(need(m, path, public), want, "{m} {path} public={public}");
        }
    }

    #[test]
    fn hosts() {
        let allowed = vec!["mill.example".to_owned()];
        for ok in [
            "127.0.0.1",
            "[::1]",
            "10.1.2.3",
            "localhost",
            "LOCALHOST.",
            "app.localhost",
            "mill.example",
            "Mill.Example",
        ] {
            assert!(host_allowed(ok, &allowed), "{ok}");
        }
        for bad in [
            "evil.example",
            "localhost.evil.example",
            "mill.example.evil",
        ] {
            assert!(!host_allowed(bad, &allowed), "{bad}");
        }
        assert!(host_allowed("anything", &["*".to_owned()]));
        assert_eq!(
            parse_allowed_host("Mill.Example.:8080").as_deref(),
            Ok("mill.example")
        );
        assert!(parse_allowed_host("a b").is_err());
        assert!(parse_allowed_host("").is_err());
    }

    #[test]
    fn origins() {
        let a: Authority = "127.0.0.1:8080".parse().unwrap();
        assert!(same_origin("http://127.0.0.1:8080", &a));
        assert!(same_origin("https://127.0.0.1:8080", &a));
        assert!(!same_origin("http://127.0.0.1:8081", &a));
        assert!(!same_origin("http://localhost:8080", &a));
        assert!(!same_origin("null", &a));
        assert!(!same_origin("", &a));
        assert!(!same_origin("file://", &a));
        let plain: Authority = "mill.example".parse().unwrap();
        assert!(same_origin("http://mill.example", &plain));
        assert!(same_origin("http://MILL.example:80", &plain));
        // A Host without a port came to the default port of the scheme in use, which this
        // layer does not see: either scheme's default is taken as the same origin.
        assert!(same_origin("https://mill.example", &plain));
        assert!(!same_origin("https://mill.example:8443", &plain));
        assert!(!same_origin("http://evil.example", &plain));
    }

    #[test]
    fn credentials_are_found_and_removed() {
        let mut h = HeaderMap::new();
        let uri: Uri = "/write?db=x&u=telegraf&p=s%3Dcret&precision=s"
            .parse()
            .unwrap();
        assert_eq!(presented(&h, &uri, true).as_deref(), Some("s=cret"));
        assert_eq!(presented(&h, &uri, false), None);
        let clean = without_credentials(&uri).unwrap();
        assert_eq!(clean.to_string(), "/write?db=x&precision=s");
        let only: Uri = "/write?p=1&u=2".parse().unwrap();
        assert_eq!(without_credentials(&only).unwrap().to_string(), "/write");
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Token abc"));
        assert_eq!(presented(&h, &uri, true).as_deref(), Some("abc"));
        assert_eq!(presented(&h, &uri, false), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dGVsZWdyYWY6c2VjcmV0"), // telegraf:secret
        );
        assert_eq!(presented(&h, &uri, true).as_deref(), Some("secret"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer xyz"),
        );
        assert_eq!(presented(&h, &uri, false).as_deref(), Some("xyz"));
    }
}
