//! DescribeUserScramCredentials and AlterUserScramCredentials, answered as a Kafka 4 broker
//! with no SCRAM credentials stored.
//!
//! Describe is exactly Kafka's (`ScramImage.describe` with an empty image): all users (a null
//! or empty list) is an empty result; each user named gets `RESOURCE_NOT_FOUND`, a user named
//! twice `DUPLICATE_RESOURCE`.
//!
//! Alter runs Kafka's checks (`ScramControlManager.alterCredentials`) in Kafka's order, with
//! its codes and messages: a user altered twice `DUPLICATE_RESOURCE`, an empty name
//! `UNACCEPTABLE_CREDENTIAL`, an unknown mechanism `UNSUPPORTED_SASL_MECHANISM`, iterations
//! outside the mechanism's 4096..=16384 `UNACCEPTABLE_CREDENTIAL`, and a deletion of a
//! credential that does not exist (every one, here) `RESOURCE_NOT_FOUND`. Where Kafka would
//! store a valid upsertion, Sluice cannot: it has no SASL, so a stored credential could never
//! authenticate anyone, and storing it would claim otherwise. That upsertion gets
//! `UNSUPPORTED_SASL_MECHANISM` with a message saying why. Of the codes Kafka has, it is the
//! closest: "the broker does not support the requested SASL mechanism" is the literal truth
//! (no SCRAM mechanism is enabled on any listener), it is a code Kafka already returns per user
//! from this very API (for a mechanism it cannot use), so clients report it per user as they
//! would any other. `SECURITY_DISABLED` would be the other candidate, but Kafka uses it for
//! "no authorizer" (the ACL APIs) and never answers it from the SCRAM APIs.

use std::collections::HashMap;
use wire::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use wire::messages::describe_user_scram_credentials_response::DescribeUserScramCredentialsResult;
use wire::messages::*;

const DESCRIBE_MISSING: &str = "Attempt to describe a user credential that does not exist: ";
const DESCRIBE_TWICE: &str = "Cannot describe SCRAM credentials for the same user twice in a single request: ";
const ALTERED_TWICE: &str = "A user credential cannot be altered twice in the same request";
const DELETE_MISSING: &str = "Attempt to delete a user credential that does not exist";
const CANNOT_STORE: &str =
    "SCRAM credentials cannot be stored: this broker (Sluice) has no SASL support yet, so no listener could authenticate with them";

pub fn describe(_version: i16, req: DescribeUserScramCredentialsRequest) -> DescribeUserScramCredentialsResponse {
    // Users in the order first named, each with whether it was named again.
    let mut users: Vec<(String, bool)> = vec![];
    let mut index: HashMap<String, usize> = HashMap::new();
    for u in req.users.unwrap_or_default() {
        match index.get(&u.name) {
            Some(&i) => users[i].1 = true,
            None => {
                index.insert(u.name.clone(), users.len());
                users.push((u.name, false));
            }
        }
    }
    let results = users
        .into_iter()
        .map(|(user, twice)| {
            let (code, message) = if twice {
                (ErrorCode::DuplicateResource, format!("{DESCRIBE_TWICE}{user}"))
            } else {
                (ErrorCode::ResourceNotFound, format!("{DESCRIBE_MISSING}{user}"))
            };
            DescribeUserScramCredentialsResult {
                user,
                error_code: code as i16,
                error_message: Some(message),
                credential_infos: vec![],
            }
        })
        .collect();
    // The top-level fields stay at their defaults, as Kafka leaves them.
    DescribeUserScramCredentialsResponse {
        results,
        ..Default::default()
    }
}

/// Kafka's `ScramMechanism` types with their iteration bounds: SCRAM-SHA-256 (1) and
/// SCRAM-SHA-512 (2).
fn known_mechanism(mechanism: i8) -> bool {
    matches!(mechanism, 1 | 2)
}

const MIN_ITERATIONS: i32 = 4096;
const MAX_ITERATIONS: i32 = 16384;

fn check_name_and_mechanism(name: &str, mechanism: i8) -> Result<(), (ErrorCode, &'static str)> {
    if name.is_empty() {
        return Err((ErrorCode::UnacceptableCredential, "Username must not be empty"));
    }
    if !known_mechanism(mechanism) {
        return Err((ErrorCode::UnsupportedSaslMechanism, "Unknown SCRAM mechanism"));
    }
    Ok(())
}

pub fn alter(_version: i16, req: AlterUserScramCredentialsRequest) -> AlterUserScramCredentialsResponse {
    // Every alteration fails here (see the module comment), so each user named gets one error:
    // the first Kafka would find. Users are answered in the order first named.
    let mut order: Vec<String> = vec![];
    let mut named: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut errors: HashMap<String, (ErrorCode, String)> = HashMap::new();
    let mut seen = |name: &str, order: &mut Vec<String>| {
        if named.insert(name.to_string()) {
            order.push(name.to_string());
        }
    };
    // Kafka first walks the deletions, then the upsertions; a user already failed is skipped,
    // one met a second time is DUPLICATE_RESOURCE.
    let mut pending: std::collections::HashSet<String> = std::collections::HashSet::new();
    for d in &req.deletions {
        seen(&d.name, &mut order);
        if errors.contains_key(&d.name) {
            continue;
        }
        if pending.remove(&d.name) {
            errors.insert(d.name.clone(), (ErrorCode::DuplicateResource, ALTERED_TWICE.into()));
            continue;
        }
        let error = match check_name_and_mechanism(&d.name, d.mechanism) {
            Err((code, message)) => (code, message.to_string()),
            Ok(()) => (ErrorCode::ResourceNotFound, DELETE_MISSING.to_string()),
        };
        errors.insert(d.name.clone(), error);
    }
    for u in &req.upsertions {
        seen(&u.name, &mut order);
        if errors.contains_key(&u.name) {
            continue;
        }
        if pending.remove(&u.name) {
            errors.insert(u.name.clone(), (ErrorCode::DuplicateResource, ALTERED_TWICE.into()));
            continue;
        }
        let checked = check_name_and_mechanism(&u.name, u.mechanism).and_then(|()| {
            if u.iterations < MIN_ITERATIONS {
                Err((ErrorCode::UnacceptableCredential, "Too few iterations"))
            } else if u.iterations > MAX_ITERATIONS {
                Err((ErrorCode::UnacceptableCredential, "Too many iterations"))
            } else {
                Ok(())
            }
        });
        match checked {
            Err((code, message)) => {
                errors.insert(u.name.clone(), (code, message.to_string()));
            }
            // Valid: Kafka would store it, and a second alteration of this user in the same
            // request would then be DUPLICATE_RESOURCE.
            Ok(()) => {
                pending.insert(u.name.clone());
            }
        }
    }
    let results = order
        .into_iter()
        .map(|user| {
            let (code, message) = errors
                .remove(&user)
                .unwrap_or((ErrorCode::UnsupportedSaslMechanism, CANNOT_STORE.to_string()));
            AlterUserScramCredentialsResult {
                user,
                error_code: code as i16,
                error_message: Some(message),
            }
        })
        .collect();
    AlterUserScramCredentialsResponse {
        results,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::messages::alter_user_scram_credentials_request::{ScramCredentialDeletion, ScramCredentialUpsertion};
    use wire::messages::describe_user_scram_credentials_request::UserName;

    fn name(n: &str) -> UserName {
        UserName { name: n.into() }
    }

    #[test]
    fn describe_all_is_empty_and_named_users_are_not_found() {
        assert!(describe(0, DescribeUserScramCredentialsRequest { users: None })
            .results
            .is_empty());
        assert!(describe(0, DescribeUserScramCredentialsRequest { users: Some(vec![]) })
            .results
            .is_empty());
        let r = describe(
            0,
            DescribeUserScramCredentialsRequest {
                users: Some(vec![name("alice"), name("bob"), name("alice")]),
            },
        );
        let got: Vec<_> = r.results.iter().map(|r| (r.user.as_str(), r.error_code)).collect();
        assert_eq!(got, vec![("alice", 92), ("bob", 91)]);
        assert_eq!(
            r.results[1].error_message.as_deref(),
            Some("Attempt to describe a user credential that does not exist: bob")
        );
    }

    fn upsert(n: &str, mechanism: i8, iterations: i32) -> ScramCredentialUpsertion {
        ScramCredentialUpsertion {
            name: n.into(),
            mechanism,
            iterations,
            ..Default::default()
        }
    }

    #[test]
    fn alter_runs_kafkas_checks_then_refuses_to_store() {
        let r = alter(
            0,
            AlterUserScramCredentialsRequest {
                deletions: vec![ScramCredentialDeletion {
                    name: "gone".into(),
                    mechanism: 1,
                }],
                upsertions: vec![
                    upsert("ok", 1, 8192),
                    upsert("few", 2, 100),
                    upsert("", 1, 8192),
                    upsert("odd", 9, 8192),
                    upsert("twice", 1, 8192),
                    upsert("twice", 2, 8192),
                ],
            },
        );
        let got: Vec<_> = r.results.iter().map(|r| (r.user.as_str(), r.error_code)).collect();
        assert_eq!(
            got,
            vec![
                ("gone", 91),
                ("ok", 33),
                ("few", 93),
                ("", 93),
                ("odd", 33),
                ("twice", 92)
            ]
        );
        assert_eq!(r.results[1].error_message.as_deref(), Some(CANNOT_STORE));
    }
}
