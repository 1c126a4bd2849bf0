//! `yujing accounts add|list|revoke` and `yujing audit export`: the operator's
//! commands, acting as `cli:` and the user's name (audited like any account).

use std::io::Write;

use super::CommandError;
use crate::accounts::{AccountsError, Creator};
use crate::app::App;
use crate::domain::account::{Account, NewAccount};

/// Who runs the command, as the audit names them.
pub fn operator() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "operator".into())
}

/// `yujing accounts add`: the account and its token (printed once by the caller).
pub async fn add(app: &App, request: &NewAccount) -> Result<(Account, String), CommandError> {
    let operator = operator();
    crate::accounts::create(&app.store, request, Creator::Operator(&operator))
        .await
        .map_err(accounts_error)
}

/// `yujing accounts list`: every account, by name.
pub async fn list(app: &App) -> Result<Vec<Account>, CommandError> {
    Ok(app.store.accounts(None).await?)
}

/// `yujing accounts revoke`: by id or name; false when already revoked.
pub async fn revoke(app: &App, id_or_name: &str) -> Result<bool, CommandError> {
    let account = app
        .store
        .account(id_or_name)
        .await?
        .ok_or_else(|| accounts_error(AccountsError::Unknown(id_or_name.to_string())))?;
    let operator = operator();
    crate::accounts::revoke(&app.store, &account, Creator::Operator(&operator))
        .await
        .map_err(accounts_error)
}

fn accounts_error(error: AccountsError) -> CommandError {
    match error {
        AccountsError::Store(error) => CommandError::Store(error),
        other => CommandError::Accounts(crate::telemetry::Chain(&other).to_string()),
    }
}

/// The format of `yujing audit export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditFormat {
    /// One JSON document per line.
    Ndjson,
    /// CSV with a header (old and new values as JSON text).
    Csv,
}

/// One CSV record as bytes.
fn csv_line(fields: &[String]) -> std::io::Result<Vec<u8>> {
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    writer.write_record(fields).map_err(std::io::Error::other)?;
    writer
        .into_inner()
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// `yujing audit export`: every audit row, oldest first.
pub async fn export_audit(
    app: &App,
    format: AuditFormat,
    out: &mut (dyn Write + Send),
) -> Result<u64, CommandError> {
    let io = |source| CommandError::Write {
        path: "stdout".into(),
        source,
    };
    let mut count = 0u64;
    if format == AuditFormat::Csv {
        let header: Vec<String> = [
            "id",
            "at",
            "actor",
            "actor_role",
            "entity",
            "entity_id",
            "action",
            "region_code",
            "from_state",
            "to_state",
            "old_value",
            "new_value",
            "detail",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        out.write_all(&csv_line(&header).map_err(io)?).map_err(io)?;
    }
    app.store
        .export_audit(&mut |row| {
            count += 1;
            match format {
                AuditFormat::Ndjson => {
                    serde_json::to_writer(&mut *out, &row)?;
                    out.write_all(b"\n")
                }
                AuditFormat::Csv => {
                    let e = &row.entry;
                    let json = |v: &Option<serde_json::Value>| {
                        v.as_ref().map(|v| v.to_string()).unwrap_or_default()
                    };
                    out.write_all(&csv_line(&[
                        row.id.to_string(),
                        e.at.to_rfc3339(),
                        e.actor.clone(),
                        e.actor_role.clone(),
                        e.entity.clone(),
                        e.entity_id.clone(),
                        e.action.clone(),
                        e.region_code.clone(),
                        e.from_state.clone().unwrap_or_default(),
                        e.to_state.clone().unwrap_or_default(),
                        json(&e.old_value),
                        json(&e.new_value),
                        e.detail.clone(),
                    ])?)
                }
            }
        })
        .await?;
    out.flush().map_err(io)?;
    Ok(count)
}
