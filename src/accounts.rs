//! Creating and revoking accounts, for the CLI (`yujing accounts`) and the API alike:
//! the hierarchy rules of [`NewAccount::check`], a fresh random token shown once and
//! stored only as its hash, and an audit row for every change.

use chrono::Utc;

use crate::domain::account::{
    Account, AccountError, NewAccount, new_account_id, new_token, token_hash,
};
use crate::store::api::AuditEntry;
use crate::store::{Store, StoreError};

/// Why an account change failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    /// Refused by the rules.
    #[error(transparent)]
    Refused(#[from] AccountError),
    /// The store failed (or the name is taken).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The operating system's random generator failed.
    #[error("cannot draw a random token: {0}")]
    Random(String),
    /// No such account.
    #[error("no account {0}")]
    Unknown(String),
}

/// Who acts: an account, or the operator at the command line (`cli:` and the user).
#[derive(Debug, Clone, Copy)]
pub enum Creator<'a> {
    /// An account, bound by the hierarchy rules.
    Account(&'a Account),
    /// The operator, who owns the store.
    Operator(&'a str),
}

impl Creator<'_> {
    fn name(&self) -> String {
        match self {
            Creator::Account(account) => account.name.clone(),
            Creator::Operator(name) => format!("cli:{name}"),
        }
    }

    fn role(&self) -> String {
        match self {
            Creator::Account(account) => account.role.to_string(),
            Creator::Operator(_) => "operator".into(),
        }
    }
}

/// Creates an account; returns it and its token (the only time the token is known).
pub async fn create(
    store: &Store,
    request: &NewAccount,
    creator: Creator<'_>,
) -> Result<(Account, String), AccountsError> {
    let account_creator = match creator {
        Creator::Account(account) => Some(account),
        Creator::Operator(_) => None,
    };
    request.check(account_creator)?;
    let token = new_token().map_err(|e| AccountsError::Random(e.to_string()))?;
    let now = Utc::now();
    let account = Account {
        account_id: new_account_id().map_err(|e| AccountsError::Random(e.to_string()))?,
        name: request.name.clone(),
        role: request.role,
        region: request.region,
        source: request.source,
        created_at: now,
        created_by: creator.name(),
        revoked_at: None,
    };
    let audit = AuditEntry {
        at: now,
        actor: creator.name(),
        actor_role: creator.role(),
        entity: "account".into(),
        entity_id: account.account_id.clone(),
        action: "create".into(),
        region_code: account.region.to_string(),
        from_state: None,
        to_state: Some("active".into()),
        old_value: None,
        new_value: Some(serde_json::json!({
            "name": account.name,
            "role": account.role.as_str(),
            "region_code": account.region.to_string(),
            "source": account.source.map(|s| s.as_str()),
        })),
        detail: String::new(),
    };
    store
        .create_account(&account, &token_hash(&token), &audit)
        .await?;
    Ok((account, token))
}

/// Revokes an account (by id or name); false when it was already revoked.
pub async fn revoke(
    store: &Store,
    target: &Account,
    creator: Creator<'_>,
) -> Result<bool, AccountsError> {
    let audit = AuditEntry {
        at: Utc::now(),
        actor: creator.name(),
        actor_role: creator.role(),
        entity: "account".into(),
        entity_id: target.account_id.clone(),
        action: "revoke".into(),
        region_code: target.region.to_string(),
        from_state: Some("active".into()),
        to_state: Some("revoked".into()),
        old_value: None,
        new_value: None,
        detail: format!("{} ({})", target.name, target.role),
    };
    Ok(store.revoke_account(&target.account_id, &audit).await?)
}
