#!/usr/bin/env bash
# Installs (Debian/Ubuntu) and starts what the tests need: the Docker Engine (docker.io), Prometheus with
# promtool, docker-compose, Chromium, python3, curl, systemd-analyze, Slurm (slurm-wlm: slurmctld, slurmd and the client commands) and
# munge, containerd with runc. Tests start their own Prometheus on a loopback port, their own munged, slurmctld and
# slurmd daemons (internal/testutil/slurm.go), and their own containerd with its CRI plugin (root, state and socket
# in a temporary directory: internal/procmap/containerd_test.go); dockerd is started here if it is not running.
set -euo pipefail
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v prometheus >/dev/null && command -v promtool >/dev/null || need+=(prometheus)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v chromium >/dev/null || need+=(chromium)
[ -x /usr/bin/python3 ] || need+=(python3) # backend introspection tests (Debian's interpreter, in and out of a container)
command -v curl >/dev/null || need+=(curl) # the example Kubernetes Job's script, run against an exporter
# The unit file's check; `systemd-analyze verify` needs no running systemd, so it works in a container too.
command -v systemd-analyze >/dev/null || need+=(systemd)
# Slurm test clusters. Without /etc/slurm/slurm.conf the packages' own slurmctld/slurmd services do not start;
# a system munged the package may start is not used.
command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null || need+=(slurm-wlm)
command -v munged >/dev/null || need+=(munge)
# A private containerd for the CRI tests; the system's containerd service, if the package starts one, is not used.
command -v containerd >/dev/null && command -v ctr >/dev/null && command -v containerd-shim-runc-v2 >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || { echo "services: need root to install ${need[*]}" >&2; exit 1; }
  echo "services: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The Debian package may start a Prometheus service on :9090; tests use their own instance, so leave it be.
if ! docker info >/dev/null 2>&1; then
  echo "services: starting dockerd"
  (setsid dockerd >/tmp/lem-dockerd.log 2>&1 &)
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "services: dockerd did not start; see /tmp/lem-dockerd.log" >&2; tail -20 /tmp/lem-dockerd.log >&2; exit 1; }
fi
echo "services: docker $(docker version --format '{{.Server.Version}}'), $(prometheus --version 2>&1 | head -1), $(slurmctld -V), $(containerd --version)"
