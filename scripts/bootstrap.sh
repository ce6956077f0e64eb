#!/bin/sh
# bootstrap.sh: entrypoint injected into sandbox containers (execd-reference.md §1.5, §1.7).
#
# Starts execd in the background, then runs the user's command and stays its parent:
#   bootstrap.sh                      runs $SHELL_BIN
#   bootstrap.sh -c "<cmd>"           runs $SHELL_BIN -c "<cmd>"
#   BOOTSTRAP_CMD="<cmd>" bootstrap.sh  the same, whatever the arguments
#   bootstrap.sh prog arg...          runs prog arg...
# SHELL_BIN is $BOOTSTRAP_SHELL, else bash when installed, else sh.
#
# Environment:
#   EXECD                       execd command line (default /opt/opensandbox/execd); unquoted on
#                               purpose, so it may carry flags. execd itself gets no arguments from
#                               this script: in production it is configured through its environment.
#   EXECD_ENVS                  KEY=VALUE file execd applies to every command (default
#                               /opt/opensandbox/.env); created when missing, then exported.
#   EXECD_BOOTSTRAP_PRE_SCRIPT  sourced (with `.`) before execd starts when it names a readable file,
#                               so its exports reach execd and the user command. A bare name is
#                               looked up in the current directory.
#   EXECD_INIT                  1/true/yes/on: exec execd as init in front of the user command
#                               (`execd --init -- CMD`, EXTENSIONS X51) instead of running both.
#   OPENSANDBOX_EGRESS_MITMPROXY_TRANSPARENT  1/true/yes/on: trust the egress sidecar's MITM CA
#                               (/opt/opensandbox/mitmproxy-ca-cert.pem, waited for up to 300 s)
#                               before anything starts. Best effort: failures only warn.
#
# Signals: SIGTERM is forwarded to the user command only (execd keeps serving while the user
# process shuts down); bootstrap waits for it and exits 0. Otherwise bootstrap exits with the user
# command's status, which ends the container and execd with it.
#
# POSIX sh only (dash, busybox ash): it runs in arbitrary user images.
set -e

_warn() {
	echo "bootstrap: warning: $*" >&2
}

_truthy() {
	case "${1:-}" in
	1 | [Tt][Rr][Uu][Ee] | [Yy][Ee][Ss] | [Oo][Nn]) return 0 ;;
	*) return 1 ;;
	esac
}

# Runs "$@" as root: directly when we are root, else through `sudo -n` when available.
_as_root() {
	if [ "$(id -u 2>/dev/null || echo 0)" = 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo -n "$@"
	else
		return 1
	fi
}

# Step 1 (optional): trust the transparent MITM proxy's CA. Every failure here only warns.
_trust_mitm_ca() {
	_ca=/opt/opensandbox/mitmproxy-ca-cert.pem
	_merged=/opt/opensandbox/merged-ca-certificates.pem
	_waited=0
	while [ ! -s "$_ca" ] && [ "$_waited" -lt 300 ]; do
		sleep 1
		_waited=$((_waited + 1))
	done
	if [ ! -s "$_ca" ]; then
		_warn "$_ca did not appear within 300 s; MITM CA not trusted"
		return 0
	fi
	# System trust store (Debian/Ubuntu/Alpine, then RHEL/Fedora).
	if command -v update-ca-certificates >/dev/null 2>&1; then
		{ _as_root mkdir -p /usr/local/share/ca-certificates \
			&& _as_root cp "$_ca" /usr/local/share/ca-certificates/opensandbox-mitmproxy-ca.crt \
			&& _as_root update-ca-certificates >/dev/null 2>&1; } \
			|| _warn "update-ca-certificates failed"
	elif command -v update-ca-trust >/dev/null 2>&1; then
		{ _as_root cp "$_ca" /etc/pki/ca-trust/source/anchors/opensandbox-mitmproxy-ca.pem \
			&& _as_root update-ca-trust extract >/dev/null 2>&1; } \
			|| _warn "update-ca-trust failed"
	fi
	# One bundle for tools that take a single file: Python certifi (else the system bundle) + the CA.
	_base=""
	for _f in "$(python3 -c 'import certifi; print(certifi.where())' 2>/dev/null || true)" \
		/etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt /etc/ssl/cert.pem; do
		if [ -n "$_f" ] && [ -r "$_f" ]; then
			_base=$_f
			break
		fi
	done
	if { if [ -n "$_base" ]; then cat "$_base" && echo; fi && cat "$_ca"; } >"$_merged" 2>/dev/null; then
		export REQUESTS_CA_BUNDLE="$_merged" SSL_CERT_FILE="$_merged"
	else
		_warn "cannot write $_merged"
	fi
	export NODE_EXTRA_CA_CERTS="$_ca"
	# NSS (Chrome/Chromium) user database.
	if command -v certutil >/dev/null 2>&1 && [ -n "${HOME:-}" ]; then
		_db="$HOME/.pki/nssdb"
		{ mkdir -p "$_db" \
			&& { [ -f "$_db/cert9.db" ] || certutil -d "sql:$_db" -N --empty-password; } \
			&& certutil -d "sql:$_db" -A -t "C,," -n opensandbox-mitmproxy -i "$_ca"; } >/dev/null 2>&1 \
			|| _warn "certutil import into $_db failed"
	fi
}

if _truthy "${OPENSANDBOX_EGRESS_MITMPROXY_TRANSPARENT:-}"; then
	_trust_mitm_ca
fi

# Step 2: execd location and the env file it re-reads for every command.
EXECD="${EXECD:=/opt/opensandbox/execd}"
if [ -z "${EXECD_ENVS:-}" ]; then
	EXECD_ENVS=/opt/opensandbox/.env
fi
mkdir -p "$(dirname "$EXECD_ENVS")" 2>/dev/null || _warn "cannot create the directory of EXECD_ENVS=$EXECD_ENVS"
touch "$EXECD_ENVS" 2>/dev/null || _warn "cannot create EXECD_ENVS=$EXECD_ENVS"
export EXECD_ENVS

# Step 3: optional pre-script, sourced so that its exports reach execd and the user command.
if [ -n "${EXECD_BOOTSTRAP_PRE_SCRIPT:-}" ]; then
	_pre=$EXECD_BOOTSTRAP_PRE_SCRIPT
	case "$_pre" in
	*/*) ;;
	*) _pre="./$_pre" ;;
	esac
	if [ -r "$_pre" ]; then
		# shellcheck disable=SC1090
		. "$_pre"
	else
		_warn "EXECD_BOOTSTRAP_PRE_SCRIPT=$EXECD_BOOTSTRAP_PRE_SCRIPT is not readable; skipped"
	fi
fi

# Step 4: the user command.
CMD=""
if [ -n "${BOOTSTRAP_CMD:-}" ]; then
	CMD=$BOOTSTRAP_CMD
elif [ "$#" -ge 1 ] && [ "$1" = "-c" ]; then
	shift
	CMD="$*"
fi
if [ -n "${BOOTSTRAP_SHELL:-}" ]; then
	SHELL_BIN=$BOOTSTRAP_SHELL
elif command -v bash >/dev/null 2>&1; then
	SHELL_BIN="bash"
else
	SHELL_BIN="sh"
fi

# Step 5 (EXECD_INIT=1): execd replaces this script as init (or child subreaper) in front of the
# user command (EXTENSIONS X51): it reaps orphans, forwards signals to the user command and exits
# with its status (128+n when signal n ended it). The steps below do not run.
if _truthy "${EXECD_INIT:-}"; then
	echo "bootstrap: starting execd as init: $EXECD" >&2
	if [ -n "$CMD" ]; then
		# shellcheck disable=SC2086
		exec $EXECD --init -- "$SHELL_BIN" -c "$CMD"
	elif [ "$#" -eq 0 ]; then
		# shellcheck disable=SC2086
		exec $EXECD --init -- "$SHELL_BIN"
	else
		# shellcheck disable=SC2086
		exec $EXECD --init -- "$@"
	fi
fi

# Step 5: execd in the background, with no arguments (unquoted: EXECD may carry flags).
echo "bootstrap: starting execd: $EXECD" >&2
# shellcheck disable=SC2086
$EXECD &

# Step 6: SIGTERM goes to the user process only. The trap is set before the user process starts
# so that no SIGTERM can fall between the two.
_term_received=0
CMD_PID=""
_forward_signal() {
	_term_received=1
	if [ -n "$CMD_PID" ]; then
		kill "-$1" "$CMD_PID" 2>/dev/null || true
	fi
}
trap '_forward_signal TERM' TERM

# Replaces the (backgrounded) subshell with the user command, so that $! is the user process.
_run_user() {
	if [ -n "$CMD" ]; then
		exec "$SHELL_BIN" -c "$CMD"
	elif [ "$#" -eq 0 ]; then
		exec "$SHELL_BIN"
	else
		exec "$@"
	fi
}

# The user command keeps bootstrap's stdin: an asynchronous command in a non-interactive shell gets
# /dev/null as stdin before its redirections apply, so stdin goes around through fd 3 (and a shell
# started with no arguments does not exit at once on EOF). Unless stdin is closed.
if (true 3<&0) 2>/dev/null; then
	exec 3<&0
	_run_user "$@" 0<&3 3<&- &
	CMD_PID=$!
	exec 3<&-
else
	_run_user "$@" &
	CMD_PID=$!
fi
# A SIGTERM that arrived before $! was known: forward it now.
if [ "$_term_received" = 1 ]; then
	kill -TERM "$CMD_PID" 2>/dev/null || true
fi

# `wait` returns early (status > 128) when a trapped signal arrives; keep waiting until the user
# process is really gone. After the last `wait` has reaped it, `kill -0` fails.
while :; do
	_status=0
	wait "$CMD_PID" || _status=$?
	if [ "$_term_received" = 1 ]; then
		if kill -0 "$CMD_PID" 2>/dev/null; then
			continue
		fi
		exit 0
	fi
	if [ "$_status" -gt 128 ] && kill -0 "$CMD_PID" 2>/dev/null; then
		# Interrupted by some other trapped signal; the user process still runs.
		continue
	fi
	exit "$_status"
done
