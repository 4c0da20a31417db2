//! The one error type of this crate.

use std::fmt;

/// Everything that can go wrong talking to the kernel. Kernel errors name the operation
/// and the object that caused them, e.g. `adding rule #3 to chain ip filter nf-pi-ab12:
/// EINVAL (Invalid argument)`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel refused an operation.
    #[error("{op}: {}", Errno(*errno))]
    Kernel {
        /// What was attempted, with the object: "adding rule #3 to chain ip filter nf-x".
        op: String,
        /// The positive errno the kernel returned.
        errno: i32,
    },

    /// Another writer committed to nf_tables between our read of the generation id and our
    /// commit, so the kernel refused the batch whole (`ERESTART` on `NFNL_BATCH_GENID`).
    /// Nothing of the batch was applied: re-observe and retry.
    #[error("nf_tables generation changed from {expected} during the commit: another writer committed first; nothing was applied, retry")]
    GenerationChanged {
        /// The generation id the batch was built against.
        expected: u32,
    },

    /// An ipset ADD or DEL of many elements failed at one element. The kernel keeps the
    /// elements before it and applies none after it.
    #[error("{op} set {set}: element #{failed} ({element}) failed: {}; {applied} element(s) before it were applied", Errno(*errno))]
    IpsetPartial {
        /// "adding to" or "deleting from".
        op: &'static str,
        /// The set's name.
        set: String,
        /// Index, in the caller's slice, of the element that failed.
        failed: usize,
        /// The element, rendered as `ipset` prints it.
        element: String,
        /// How many elements of the caller's slice were applied (all those before `failed`).
        applied: usize,
        /// The positive errno (ipset's own codes are above 4096).
        errno: i32,
    },

    /// The kernel's answer to a request was lost (the receive buffer overflowed), and
    /// nothing that was read shows the request failed, so whether it was applied is
    /// unknown. Not retryable as it is: read the kernel's state back and plan again.
    #[error("{op}: outcome unknown: {reason}; read the kernel's state back before retrying")]
    Unconfirmed {
        /// What was attempted.
        op: String,
        /// What was lost.
        reason: String,
    },

    /// Opening, configuring or using the netlink socket failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The system error.
        #[source]
        source: std::io::Error,
    },

    /// A kernel reply did not decode. Never a panic: decoding is bounds-checked.
    #[error("malformed netlink reply: {0}")]
    Malformed(String),

    /// An object can't be encoded (a name too long, a message over 64 KiB).
    #[error("cannot encode {what}")]
    Encode {
        /// What, and why.
        what: String,
    },

    /// The request was invalid before anything was sent.
    #[error("invalid {object}: {reason}")]
    Invalid {
        /// The object and field: "chain name", "set nf-x element 10.0.0.0/33".
        object: String,
        /// Why.
        reason: String,
    },
}

/// A copy for every party that waits on one failure (an engine's completions). An
/// `io::Error` is not `Clone`; the copy keeps its errno, or else its kind and message.
impl Clone for Error {
    fn clone(&self) -> Self {
        match self {
            Self::Kernel { op, errno } => Self::Kernel {
                op: op.clone(),
                errno: *errno,
            },
            Self::GenerationChanged { expected } => Self::GenerationChanged {
                expected: *expected,
            },
            Self::IpsetPartial {
                op,
                set,
                failed,
                element,
                applied,
                errno,
            } => Self::IpsetPartial {
                op,
                set: set.clone(),
                failed: *failed,
                element: element.clone(),
                applied: *applied,
                errno: *errno,
            },
            Self::Unconfirmed { op, reason } => Self::Unconfirmed {
                op: op.clone(),
                reason: reason.clone(),
            },
            Self::Io { what, source } => Self::Io {
                what: what.clone(),
                source: match source.raw_os_error() {
                    Some(errno) => std::io::Error::from_raw_os_error(errno),
                    None => std::io::Error::new(source.kind(), source.to_string()),
                },
            },
            Self::Malformed(m) => Self::Malformed(m.clone()),
            Self::Encode { what } => Self::Encode { what: what.clone() },
            Self::Invalid { object, reason } => Self::Invalid {
                object: object.clone(),
                reason: reason.clone(),
            },
        }
    }
}

impl Error {
    pub(crate) fn malformed(what: impl Into<String>) -> Self {
        Self::Malformed(what.into())
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn invalid(object: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            object: object.into(),
            reason: reason.into(),
        }
    }

    /// The errno behind this error, when the kernel gave one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { errno, .. } | Self::IpsetPartial { errno, .. } => Some(*errno),
            Self::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// Whether the request may have been applied although it is reported as failed
    /// ([`Error::Unconfirmed`]): the caller's record of the kernel's state can't be
    /// trusted until it is read again.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, Self::Unconfirmed { .. })
    }

    /// Whether retrying the same request later may succeed: a concurrent writer
    /// ([`Error::GenerationChanged`], `ERESTART`, `EBUSY`) or a transient shortage
    /// (`ENOBUFS`, `EAGAIN`, `EINTR`).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::GenerationChanged { .. } => true,
            _ => matches!(
                self.errno(),
                Some(libc::ERESTART | libc::EBUSY | libc::ENOBUFS | libc::EAGAIN | libc::EINTR)
            ),
        }
    }
}

/// Renders an errno as `ENAME (description)`, and ipset's private codes by their meaning.
#[derive(Debug, Clone, Copy)]
pub struct Errno(pub i32);

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(text) = crate::ipset::ipset_errno_text(self.0) {
            return write!(f, "{text} (ipset error {})", self.0);
        }
        let name = match self.0 {
            libc::EPERM => "EPERM",
            libc::ENOENT => "ENOENT",
            libc::EINTR => "EINTR",
            libc::EIO => "EIO",
            libc::E2BIG => "E2BIG",
            libc::EAGAIN => "EAGAIN",
            libc::ENOMEM => "ENOMEM",
            libc::EACCES => "EACCES",
            libc::EBUSY => "EBUSY",
            libc::EEXIST => "EEXIST",
            libc::ENODEV => "ENODEV",
            libc::EINVAL => "EINVAL",
            libc::ENFILE => "ENFILE",
            libc::EMFILE => "EMFILE",
            libc::ENOSPC => "ENOSPC",
            libc::ERANGE => "ERANGE",
            libc::ENAMETOOLONG => "ENAMETOOLONG",
            libc::ENOTEMPTY => "ENOTEMPTY",
            libc::ELOOP => "ELOOP",
            libc::EMSGSIZE => "EMSGSIZE",
            libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
            libc::EOPNOTSUPP => "EOPNOTSUPP",
            libc::ENOBUFS => "ENOBUFS",
            libc::ERESTART => "ERESTART",
            libc::EPROTO => "EPROTO",
            libc::ENETDOWN => "ENETDOWN",
            libc::ENETUNREACH => "ENETUNREACH",
            libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
            libc::EADDRINUSE => "EADDRINUSE",
            _ => "errno",
        };
        write!(
            f,
            "{name} ({})",
            std::io::Error::from_raw_os_error(self.0)
                .to_string()
                .split(" (os error")
                .next()
                .unwrap_or("")
        )
    }
}
