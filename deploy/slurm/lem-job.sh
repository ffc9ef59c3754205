#!/bin/sh
# lem's Slurm Prolog and Epilog: marks every job as a run on its node's lem-exporter (start from the Prolog, end
# from the Epilog), so that Prometheus holds every job's GPU energy by the GPUs' energy counters. Install it as
# both (slurm.conf: Prolog=/etc/slurm/lem-job.sh and Epilog=/etc/slurm/lem-job.sh, or in the Prolog/Epilog
# directories a site already uses); docs/OPERATIONS.md (Slurm) has the rest.
#
# slurmd runs it as root, with no PATH: every command below is an absolute path or a shell builtin. It always
# exits 0: Slurm drains a node whose Prolog or Epilog fails, and a job's energy is not worth a node. What goes
# wrong is one line in $LEM_LOG; the marker token is read from its file and never printed.

LEM_RUN=/usr/local/bin/lem-run
LEM_EXPORTER=http://127.0.0.1:9636
LEM_TOKEN_FILE=/etc/lem/marker-token
LEM_LOG=/var/log/lem/slurm-job.log
LEM_OPTIONS=
# Site settings: a shell file setting any of the variables above.
LEM_SLURM_CONF=/etc/lem/slurm-job.conf
if [ -r "$LEM_SLURM_CONF" ]; then
	. "$LEM_SLURM_CONF"
fi

case "$SLURM_SCRIPT_CONTEXT" in
prolog_slurmd) edge=start ;;
epilog_slurmd) edge=end ;;
*) exit 0 ;;
esac
if [ ! -x "$LEM_RUN" ]; then
	exit 0
fi
if [ ! -d "${LEM_LOG%/*}" ]; then
	LEM_LOG=/dev/null
fi
set --
if [ -r "$LEM_TOKEN_FILE" ]; then
	set -- --exporter-token-file "$LEM_TOKEN_FILE"
fi
# $LEM_OPTIONS is split into words on purpose (e.g. --experiment=slurm/{account} --timeout=3s).
"$LEM_RUN" slurm-job "$edge" --exporter "$LEM_EXPORTER" "$@" $LEM_OPTIONS </dev/null >>"$LEM_LOG" 2>&1
exit 0
