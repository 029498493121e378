//! The gateway's demo ledger: accounts per tenant, transfers between them.
//!
//! In memory and deliberately small; the point of the gateway is the
//! governance around it. A real service would put this in a database and
//! report its outcome through `RequestLabels::set_consistency_status`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::amount::Amount;

/// One account.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Account {
    /// Account id, unique within its tenant.
    pub id: String,
    /// Owning tenant.
    pub tenant: String,
    /// Display name.
    pub name: String,
    /// Balance, as an exact decimal string.
    pub balance: String,
    #[serde(skip)]
    cents: u64,
}

/// Why a transfer failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferError {
    /// An account does not exist in this tenant.
    UnknownAccount(String),
    /// Same account on both sides.
    SameAccount,
    /// Not enough money.
    InsufficientFunds,
    /// No order id: without one a resend cannot be told from a new order.
    MissingOrderId,
    /// An order id over 128 characters or outside visible ASCII.
    InvalidOrderId,
    /// An account id over 64 characters or outside `[A-Za-z0-9._-]`.
    InvalidAccountId,
    /// The order id was committed before for a different payment.
    OrderReused(String),
}

impl std::fmt::Display for TransferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownAccount(id) => write!(f, "no account {id:?} in this tenant"),
            Self::SameAccount => f.write_str("from and to are the same account"),
            Self::InsufficientFunds => f.write_str("insufficient funds"),
            Self::MissingOrderId => f.write_str("a transfer needs an order id"),
            Self::InvalidOrderId => f.write_str("an order id is 1-128 visible ASCII characters"),
            Self::InvalidAccountId => f.write_str(
                "an account id is 1-64 characters: ASCII letters, digits, '.', '_' or '-'",
            ),
            Self::OrderReused(id) => {
                write!(f, "order {id:?} was committed for a different transfer")
            }
        }
    }
}

/// A completed transfer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Transfer {
    /// Generated id.
    pub transfer_id: String,
    /// Final state.
    pub state: &'static str,
}

/// The longest order id kept (the telemetry layer's bound for `x-order-id`).
pub const MAX_ORDER_ID_LEN: usize = 128;

/// An order id must be 1–128 visible ASCII characters: it is a key kept
/// for as long as the ledger lives, and it is written to the audit log.
pub fn check_order_id(order_id: &str) -> Result<(), TransferError> {
    if order_id.is_empty() {
        return Err(TransferError::MissingOrderId);
    }
    if order_id.len() > MAX_ORDER_ID_LEN || !order_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TransferError::InvalidOrderId);
    }
    Ok(())
}

/// The longest account id.
pub const MAX_ACCOUNT_ID_LEN: usize = 64;

/// An account id must be 1–64 ASCII letters, digits, `.`, `_` or `-`.
///
/// Security: ids come from the caller and are written to the audit log and
/// echoed in refusals (which the idempotency store keeps); they are checked
/// before either, so a megabyte `from` field is refused, not recorded.
pub fn check_account_id(id: &str) -> Result<(), TransferError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ACCOUNT_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(TransferError::InvalidAccountId)
    }
}

/// What an order pays: compared when an order id comes again.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Payment {
    from: String,
    to: String,
    cents: u64,
}

impl Payment {
    fn new(from: &str, to: &str, amount: Amount) -> Self {
        Self {
            from: from.to_owned(),
            to: to.to_owned(),
            cents: amount.cents(),
        }
    }
}

type Orders = BTreeMap<(String, String), (Payment, Transfer)>;

/// The transfer an order committed before, if any; an error when the same
/// order id now names another payment.
fn prior(
    orders: &Orders,
    key: &(String, String),
    payment: &Payment,
) -> Result<Option<Transfer>, TransferError> {
    match orders.get(key) {
        None => Ok(None),
        Some((paid, done)) if paid == payment => Ok(Some(done.clone())),
        Some(_) => Err(TransferError::OrderReused(key.1.clone())),
    }
}

/// All tenants' accounts.
#[derive(Debug)]
pub struct Ledger {
    accounts: Mutex<BTreeMap<(String, String), Account>>,
    /// Committed transfers by (tenant, order id): the business key, so a
    /// resent order (a stream cut by its deadline, a retry under a new
    /// idempotency key) is answered with its first outcome, never paid twice.
    /// The payment is kept with it: the same order id for another payment
    /// is refused, not answered with a transfer that never happened.
    orders: Mutex<Orders>,
    next_transfer: AtomicU64,
}

impl Ledger {
    /// The demo data: two accounts in each demo tenant.
    pub fn demo() -> Self {
        let ledger = Self {
            accounts: Mutex::default(),
            orders: Mutex::default(),
            next_transfer: AtomicU64::new(1),
        };
        for tenant in ["tenant-a", "tenant-b", "tenant-frozen"] {
            for (id, name, cents) in [
                ("acc-1", "Operating", 1_000_000),
                ("acc-2", "Reserve", 250_000),
            ] {
                ledger.accounts.lock().unwrap().insert(
                    (tenant.into(), id.into()),
                    Account {
                        id: id.into(),
                        tenant: tenant.into(),
                        name: name.into(),
                        balance: Amount::from_cents(cents).to_string(),
                        cents,
                    },
                );
            }
        }
        ledger
    }

    /// Accounts of `tenant`.
    pub fn list(&self, tenant: &str) -> Vec<Account> {
        let accounts = self.accounts.lock().unwrap();
        accounts
            .values()
            .filter(|a| a.tenant == tenant)
            .cloned()
            .collect()
    }

    /// One account of `tenant`.
    pub fn get(&self, tenant: &str, id: &str) -> Option<Account> {
        let accounts = self.accounts.lock().unwrap();
        accounts.get(&(tenant.to_owned(), id.to_owned())).cloned()
    }

    /// Renames an account of `tenant`.
    pub fn rename(&self, tenant: &str, id: &str, name: &str) -> Option<Account> {
        let mut accounts = self.accounts.lock().unwrap();
        let account = accounts.get_mut(&(tenant.to_owned(), id.to_owned()))?;
        account.name = name.to_owned();
        Some(account.clone())
    }

    /// Checks a transfer without moving money (the PREPARE step).
    pub fn prepare(
        &self,
        tenant: &str,
        from: &str,
        to: &str,
        amount: Amount,
    ) -> Result<(), TransferError> {
        let accounts = self.accounts.lock().unwrap();
        if from == to {
            return Err(TransferError::SameAccount);
        }
        let from_acc = accounts
            .get(&(tenant.to_owned(), from.to_owned()))
            .ok_or_else(|| TransferError::UnknownAccount(from.to_owned()))?;
        if !accounts.contains_key(&(tenant.to_owned(), to.to_owned())) {
            return Err(TransferError::UnknownAccount(to.to_owned()));
        }
        if from_acc.cents < amount.cents() {
            return Err(TransferError::InsufficientFunds);
        }
        Ok(())
    }

    /// The transfer already committed for this order, if any. The same
    /// order id for another payment is an error.
    pub fn committed(
        &self,
        tenant: &str,
        order_id: &str,
        from: &str,
        to: &str,
        amount: Amount,
    ) -> Result<Option<Transfer>, TransferError> {
        let orders = self.orders.lock().unwrap();
        let key = (tenant.to_owned(), order_id.to_owned());
        prior(&orders, &key, &Payment::new(from, to, amount))
    }

    /// Moves the money atomically (the COMMIT step). An order committed
    /// before is not paid again: its first transfer is returned, or an
    /// error when the order id now names another payment.
    pub fn commit(
        &self,
        tenant: &str,
        order_id: &str,
        from: &str,
        to: &str,
        amount: Amount,
    ) -> Result<Transfer, TransferError> {
        check_order_id(order_id)?;
        let payment = Payment::new(from, to, amount);
        // Lock order: orders, then accounts (the only place taking both).
        let mut orders = self.orders.lock().unwrap();
        let order_key = (tenant.to_owned(), order_id.to_owned());
        if let Some(done) = prior(&orders, &order_key, &payment)? {
            return Ok(done);
        }
        let mut accounts = self.accounts.lock().unwrap();
        let from_key = (tenant.to_owned(), from.to_owned());
        let to_key = (tenant.to_owned(), to.to_owned());
        if from == to {
            return Err(TransferError::SameAccount);
        }
        if !accounts.contains_key(&to_key) {
            return Err(TransferError::UnknownAccount(to.to_owned()));
        }
        let from_acc = accounts
            .get_mut(&from_key)
            .ok_or_else(|| TransferError::UnknownAccount(from.to_owned()))?;
        from_acc.cents = from_acc
            .cents
            .checked_sub(amount.cents())
            .ok_or(TransferError::InsufficientFunds)?;
        from_acc.balance = Amount::from_cents(from_acc.cents).to_string();
        let to_acc = accounts.get_mut(&to_key).expect("checked above");
        to_acc.cents += amount.cents();
        to_acc.balance = Amount::from_cents(to_acc.cents).to_string();
        let n = self.next_transfer.fetch_add(1, Ordering::Relaxed);
        let transfer = Transfer {
            transfer_id: format!("tr-{n:08}"),
            state: "COMMITTED",
        };
        orders.insert(order_key, (payment, transfer.clone()));
        Ok(transfer)
    }
}
