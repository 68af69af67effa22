//! Reading the caller's arguments: NUL-terminated UTF-8 strings, arrays of
//! them, and out-pointers, each checked (NULL, not UTF-8) before use.

use std::ffi::{CStr, CString, c_char};

use crate::error::Failure;

/// A required string argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that outlives `'a`.
pub(crate) unsafe fn required<'a>(p: *const c_char, name: &str) -> Result<&'a str, Failure> {
    if p.is_null() {
        return Err(Failure::invalid(format!("{name} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated, per this function's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map_err(|e| Failure::invalid(format!("{name} is not UTF-8: {e}")))
}

/// An optional string argument: NULL is `None`.
///
/// # Safety
/// As for [`required`].
pub(crate) unsafe fn optional<'a>(
    p: *const c_char,
    name: &str,
) -> Result<Option<&'a str>, Failure> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: as the caller promised.
    unsafe { required(p, name) }.map(Some)
}

/// An array of `count` strings (`list` may be NULL when `count` is 0).
///
/// # Safety
/// `list` is NULL or points to `count` pointers, each as for [`required`].
pub(crate) unsafe fn list(
    list: *const *const c_char,
    count: usize,
    name: &str,
) -> Result<Vec<String>, Failure> {
    if count == 0 {
        return Ok(Vec::new());
    }
    if list.is_null() {
        return Err(Failure::invalid(format!(
            "{name} is NULL but its count is {count}"
        )));
    }
    (0..count)
        .map(|i| {
            // SAFETY: `list` holds `count` pointers, per the contract.
            let p = unsafe { *list.add(i) };
            // SAFETY: each is a NUL-terminated string, per the contract.
            unsafe { required(p, &format!("{name}[{i}]")) }.map(str::to_string)
        })
        .collect()
}

/// A required out-pointer.
///
/// # Safety
/// `p` is NULL or valid for writes of a `T`.
pub(crate) unsafe fn out<'a, T>(p: *mut T, name: &str) -> Result<&'a mut T, Failure> {
    // SAFETY: non-NULL pointers are valid for writes, per the contract.
    unsafe { p.as_mut() }.ok_or_else(|| Failure::invalid(format!("{name} is NULL")))
}

/// A string for C: an interior NUL (which UTF-8 text from the broker could
/// hold) ends it there.
pub(crate) fn c_string(s: &str) -> CString {
    let end = s.bytes().position(|b| b == 0).unwrap_or(s.len());
    CString::new(&s.as_bytes()[..end]).unwrap_or_default()
}

/// JSON text of a view (`turnstile-view`: the schema of `turnstile --json`,
/// docs/json.md).
pub(crate) fn json(view: &impl serde::Serialize) -> String {
    // Plain structs of strings and numbers always serialize.
    serde_json::to_string(view).unwrap_or_else(|_| "null".into())
}
