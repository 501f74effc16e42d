//! Who may call what: webhook tokens for the Prefect intake, API tokens with
//! roles for everything else but health. Tokens arrive as
//! `Authorization: Bearer <token>` (what a Prefect Webhook block sends through
//! its headers) and are compared in constant time.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::rotation::Rotating;
use crate::secret::Secret;

/// API roles, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read actions, spool figures and dead letters.
    Viewer,
    /// Also create, delete and test actions, and retry dead letters.
    User,
    /// Everything, including purging dead letters.
    Admin,
}

impl Role {
    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::User => "user",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not viewer, user or admin.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown role {0:?}: expected viewer, user or admin")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "viewer" => Ok(Self::Viewer),
            "user" => Ok(Self::User),
            "admin" => Ok(Self::Admin),
            other => Err(UnknownRole(other.to_owned())),
        }
    }
}

/// The configured tokens.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    /// Any of these opens the Prefect intake; none configured: the intake is open.
    pub(crate) webhook: Vec<Rotating>,
    /// API tokens and their roles; none configured: the API answers only
    /// loopback clients.
    pub(crate) api: Vec<(Role, Rotating)>,
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// 401: no valid token.
    Unauthenticated,
    /// 403: valid token, role too low.
    Forbidden {
        /// Role the endpoint needs.
        needs: Role,
        /// Role the token has.
        has: Role,
    },
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Constant-time equality; every candidate is compared, so timing says
/// nothing about which (or whether one) matched.
fn matches(presented: &str, expected: &Secret) -> bool {
    bool::from(presented.as_bytes().ct_eq(expected.expose().as_bytes()))
}

impl Tokens {
    /// Checks a Prefect webhook request.
    ///
    /// # Errors
    /// [`Denied::Unauthenticated`] without a valid webhook token.
    pub fn webhook(&self, headers: &HeaderMap) -> Result<(), Denied> {
        if self.webhook.is_empty() {
            return Ok(());
        }
        let presented = bearer(headers).unwrap_or_default();
        let mut ok = false;
        for t in &self.webhook {
            ok |= matches(presented, &t.current());
        }
        if ok { Ok(()) } else { Err(Denied::Unauthenticated) }
    }

    /// Checks an API request that needs `needs`.
    ///
    /// # Errors
    /// 401 without a valid API token (or, with none configured, from a
    /// non-loopback client); 403 when the token's role is too low.
    pub fn api(&self, headers: &HeaderMap, peer: IpAddr, needs: Role) -> Result<Role, Denied> {
        if self.api.is_empty() {
            return if peer.is_loopback() {
                Ok(Role::Admin)
            } else {
                Err(Denied::Unauthenticated)
            };
        }
        let presented = bearer(headers).unwrap_or_default();
        let mut best: Option<Role> = None;
        for (role, t) in &self.api {
            if matches(presented, &t.current()) {
                best = best.max(Some(*role));
            }
        }
        match best {
            None => Err(Denied::Unauthenticated),
            Some(has) if has < needs => Err(Denied::Forbidden { needs, has }),
            Some(has) => Ok(has),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, auth.parse().expect("header"));
        h
    }

    #[test]
    fn webhook_tokens_rotate_and_refuse_the_rest() {
        let t = Tokens {
            webhook: vec![
                Rotating::fixed(Secret::new("old-token-123")),
                Rotating::fixed(Secret::new("new-token-456")),
            ],
            api: vec![],
        };
        assert!(t.webhook(&headers("Bearer old-token-123")).is_ok());
        assert!(t.webhook(&headers("bearer new-token-456")).is_ok());
        assert_eq!(
            t.webhook(&headers("Bearer new-token-45")),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            t.webhook(&headers("Basic new-token-456")),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(t.webhook(&HeaderMap::new()), Err(Denied::Unauthenticated));
        assert!(Tokens::default().webhook(&HeaderMap::new()).is_ok());
    }

    #[test]
    fn api_roles_are_ordered() {
        let t = Tokens {
            webhook: vec![],
            api: vec![
                (Role::Viewer, Rotating::fixed(Secret::new("v-token"))),
                (Role::Admin, Rotating::fixed(Secret::new("a-token"))),
            ],
        };
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        assert_eq!(
            t.api(&headers("Bearer v-token"), ip, Role::Viewer),
            Ok(Role::Viewer)
        );
        assert_eq!(
            t.api(&headers("Bearer v-token"), ip, Role::User),
            Err(Denied::Forbidden {
                needs: Role::User,
                has: Role::Viewer
            })
        );
        assert_eq!(
            t.api(&headers("Bearer a-token"), ip, Role::Admin),
            Ok(Role::Admin)
        );
        assert_eq!(
            t.api(&HeaderMap::new(), ip, Role::Viewer),
            Err(Denied::Unauthenticated)
        );
        let open = Tokens::default();
        assert!(
            open.api(&HeaderMap::new(), "127.0.0.1".parse().expect("ip"), Role::Admin)
                .is_ok()
        );
        assert_eq!(
            open.api(&HeaderMap::new(), ip, Role::Viewer),
            Err(Denied::Unauthenticated)
        );
    }
}
