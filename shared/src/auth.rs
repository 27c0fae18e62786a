//! JWT checks (contract section 2): HS256 tokens with `sub`, `role`, `exp` and an optional `name`.
//!
//! A token's `sub` becomes part of a NATS subject (`user.<sub>.events`), so it is held to
//! `[A-Za-z0-9_-]{1,64}` here, before anything is subscribed or published.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

/// Who a user is in this product. A token with any other role is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Seeker,
    Provider,
    /// Someone of the platform who joins the chat of a disputed session (contract section 10).
    Mediator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Seeker => "seeker",
            Role::Provider => "provider",
            Role::Mediator => "mediator",
        }
    }

    pub fn parse(value: &str) -> Option<Role> {
        match value {
            "seeker" => Some(Role::Seeker),
            "provider" => Some(Role::Provider),
            "mediator" => Some(Role::Mediator),
            _ => None,
        }
    }

    /// "Seeker" / "Provider", as the seed's human-readable messages write it.
    pub fn title(self) -> &'static str {
        match self {
            Role::Seeker => "Seeker",
            Role::Provider => "Provider",
            Role::Mediator => "Mediator",
        }
    }

    /// The other party of a seeker or a provider (a mediator stands beside both: itself).
    pub fn other(self) -> Role {
        match self {
            Role::Seeker => Role::Provider,
            Role::Provider => Role::Seeker,
            Role::Mediator => Role::Mediator,
        }
    }

    /// Whether this is one of the session's two parties (not a mediator).
    pub fn is_party(self) -> bool {
        matches!(self, Role::Seeker | Role::Provider)
    }
}

/// The authenticated caller, as the gateway hands it to the workers in headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    pub role: Role,
    pub name: Option<String>,
    /// The token's `exp` (unix seconds): a socket opened with it is closed when it passes (plus
    /// [`LEEWAY_SECS`]) unless the client refreshes it (contract section 12).
    pub expires_at: i64,
}

/// How far past `exp` a token is still accepted (clocks of phones and servers differ).
pub const LEEWAY_SECS: u64 = 30;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: String,
    exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing token")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("invalid token")]
    Invalid,
    #[error("invalid token subject")]
    InvalidSubject,
    #[error("invalid token role")]
    InvalidRole,
    #[error("invalid token name")]
    InvalidName,
}

/// The longest `name` claim accepted, in characters (contract section 7).
pub const NAME_MAX_CHARS: usize = 100;

/// True for a `name` claim the product can carry: at most 100 characters, no control characters
/// (a CR or LF could not travel in a NATS header; a NUL could not be stored).
pub fn is_valid_name(name: &str) -> bool {
    name.chars().count() <= NAME_MAX_CHARS && !name.chars().any(char::is_control)
}

/// True for ids that may appear inside a NATS subject token.
pub fn is_valid_user_id(user_id: &str) -> bool {
    !user_id.is_empty()
        && user_id.len() <= 64
        && user_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Verifies tokens against one secret. Built once per process.
#[derive(Clone)]
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl TokenVerifier {
    pub fn new(secret: &str) -> TokenVerifier {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "sub"]);
        TokenVerifier {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |error| match error.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid,
            },
        )?;
        let claims = data.claims;
        if !is_valid_user_id(&claims.sub) {
            return Err(AuthError::InvalidSubject);
        }
        let role = Role::parse(&claims.role).ok_or(AuthError::InvalidRole)?;
        if claims
            .name
            .as_deref()
            .is_some_and(|name| !is_valid_name(name))
        {
            return Err(AuthError::InvalidName);
        }
        Ok(Identity {
            user_id: claims.sub,
            role,
            name: claims.name,
            expires_at: claims.exp,
        })
    }
}

/// Signs a token. Used by the local stack's demo tokens, development mode and the tests; real
/// deployments bring their own tokens.
pub fn mint(
    secret: &str,
    user_id: &str,
    role: Role,
    name: Option<&str>,
    lifetime_secs: i64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let claims = Claims {
        sub: user_id.to_owned(),
        role: role.as_str().to_owned(),
        exp: chrono::Utc::now().timestamp() + lifetime_secs,
        name: name.map(str::to_owned),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_verifies() {
        let token = mint("s", "user_1", Role::Seeker, Some("Ann"), 60).expect("mint");
        let identity = TokenVerifier::new("s").verify(&token).expect("verify");
        assert_eq!(identity.user_id, "user_1");
        assert_eq!(identity.role, Role::Seeker);
        assert_eq!(identity.name.as_deref(), Some("Ann"));
    }

    #[test]
    fn names_with_control_characters_or_over_100_characters_are_refused() {
        let long = "é".repeat(101);
        for name in [
            "Ann\r\nx-role: provider",
            "a\u{0}b",
            "tab\there",
            long.as_str(),
        ] {
            let token = mint("s", "user_1", Role::Seeker, Some(name), 60).expect("mint");
            assert_eq!(
                TokenVerifier::new("s").verify(&token),
                Err(AuthError::InvalidName),
                "{name:?}"
            );
        }
        let fine = "é".repeat(100);
        let token = mint("s", "user_1", Role::Seeker, Some(&fine), 60).expect("mint");
        assert!(TokenVerifier::new("s").verify(&token).is_ok());
    }

    #[test]
    fn subjects_with_subject_syntax_are_refused() {
        for sub in ["*", ">", "a.b", "a b", ""] {
            let token = mint("s", sub, Role::Seeker, None, 60).expect("mint");
            assert!(TokenVerifier::new("s").verify(&token).is_err(), "{sub:?}");
        }
    }

    #[test]
    fn expired_and_badly_signed_tokens_are_refused() {
        let expired = mint("s", "u", Role::Seeker, None, -120).expect("mint");
        assert_eq!(
            TokenVerifier::new("s").verify(&expired),
            Err(AuthError::Expired)
        );
        let other = mint("other", "u", Role::Seeker, None, 60).expect("mint");
        assert_eq!(
            TokenVerifier::new("s").verify(&other),
            Err(AuthError::Invalid)
        );
    }
}
