"""A minimal ctypes binding to libpam: account check and session, nothing else.

The manager never authenticates anyone (Globus did that); PAM is there so the
site's account policy (expiry, access lists) and session modules (limits,
systemd, accounting) apply to user endpoints as to any login. Only
:mod:`mep.monitor.spawn` drives it. Load it in the parent: the forked child must
not dlopen libraries itself.
"""

from __future__ import annotations

import ctypes

PAM_SUCCESS = 0
PAM_CONV_ERR = 19
PAM_SILENT = 0x8000
PAM_ESTABLISH_CRED = 0x2
PAM_DELETE_CRED = 0x4
PAM_REINITIALIZE_CRED = 0x8
MAX_USER_LEN = 512

_CONV_FUNC = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p
)


class _PamConv(ctypes.Structure):
    _fields_ = [("conv", _CONV_FUNC), ("appdata_ptr", ctypes.c_void_p)]


def _refuse_conversation(n_messages, messages, responses, appdata):
    """Nobody is at a terminal: any prompt from a module is answered with an error."""
    return PAM_CONV_ERR


class PamError(Exception):
    """A PAM call failed; the text names the call and libpam's reason."""


class PamSession:
    """One PAM transaction for one local user, from account check to session close."""

    def __init__(self, service: str, user: str):
        if not service or not user or len(user) > MAX_USER_LEN:
            raise PamError(f"bad PAM service {service!r} or user name")
        self._lib = ctypes.CDLL("libpam.so.0", use_errno=True)
        self._lib.pam_strerror.restype = ctypes.c_char_p
        self._lib.pam_strerror.argtypes = [ctypes.c_void_p, ctypes.c_int]
        self._service = service.encode()
        self._user = user.encode()
        self._conv = _PamConv(_CONV_FUNC(_refuse_conversation), None)
        self._handle = ctypes.c_void_p()
        self._session_open = False

    def _call(self, name: str, *args) -> None:
        rc = getattr(self._lib, name)(self._handle, *args)
        if rc != PAM_SUCCESS:
            reason = self._lib.pam_strerror(self._handle, rc) or b"unknown error"
            raise PamError(f"{name} failed: {reason.decode(errors='replace')} ({rc})")

    def check_account(self) -> None:
        """pam_start, then the account policy (expired, locked, not allowed here...)."""
        if self._handle:
            raise PamError("this PAM transaction has already started")
        rc = self._lib.pam_start(
            self._service, self._user, ctypes.byref(self._conv), ctypes.byref(self._handle)
        )
        if rc != PAM_SUCCESS:
            raise PamError(f"pam_start failed ({rc})")
        self._call("pam_acct_mgmt", PAM_SILENT)

    def open_session(self) -> None:
        self._call("pam_setcred", PAM_ESTABLISH_CRED | PAM_SILENT)
        self._call("pam_open_session", PAM_SILENT)
        self._session_open = True

    def reestablish_credentials(self) -> None:
        """Re-apply module credentials (e.g. pam_group) that setgroups just replaced."""
        self._call("pam_setcred", PAM_REINITIALIZE_CRED | PAM_SILENT)

    def close(self) -> None:
        """Close the session and end the transaction; best effort, never raises."""
        if self._handle:
            if self._session_open:
                self._lib.pam_close_session(self._handle, PAM_SILENT)
                self._lib.pam_setcred(self._handle, PAM_DELETE_CRED | PAM_SILENT)
            self._lib.pam_end(self._handle, PAM_SUCCESS)
            self._handle = ctypes.c_void_p()
