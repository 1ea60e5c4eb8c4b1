#!/usr/bin/env bash
# FER Lab on one machine as N app replicas behind HAProxy with sticky sessions (deploy/README.md).
#
#   deploy/local_cluster.sh --replicas N --port P [--address ADDR] [--logs DIR]
#
# Each replica is `streamlit run app.py` on a free port of 127.0.0.1, with FER_LAB_REPLICA=r1..rN;
# all share the model store folder ($FER_LAB_MODELS, else the project's models/) and with it the
# training queue. HAProxy listens on ADDR:P (127.0.0.1 unless told) and keeps each browser session
# on one replica (cookie SERVERID): its WebSocket, uploads and WebRTC signalling; the WebRTC media
# goes straight to that replica's own ICE candidates. The script prints the URL once every replica
# answers, and stops everything on TERM or Ctrl-C (or when a replica or HAProxy exits).
# $PYTHON names the Python that runs Streamlit (python3 unless set).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
START_SECONDS=120
usage="usage: deploy/local_cluster.sh --replicas N --port P [--address ADDR] [--logs DIR]"

die() {
  echo "local_cluster.sh: $*" >&2
  exit 2
}

replicas="" port="" address="127.0.0.1" logs=""
while (($#)); do
  case "$1" in
    --replicas | --port | --address | --logs)
      (($# >= 2)) || die "$1 needs a value ($usage)"
      case "$1" in
        --replicas) replicas="$2" ;;
        --port) port="$2" ;;
        --address) address="$2" ;;
        --logs) logs="$2" ;;
      esac
      shift 2
      ;;
    -h | --help)
      echo "$usage"
      exit 0
      ;;
    *) die "unknown argument '$1' ($usage)" ;;
  esac
done
[[ -n $replicas && -n $port ]] || die "$usage"
[[ $replicas =~ ^[0-9]+$ ]] && ((10#$replicas >= 1 && 10#$replicas <= 32)) ||
  die "--replicas takes a whole number from 1 to 32, not '$replicas'"
[[ $port =~ ^[0-9]+$ ]] && ((10#$port >= 1 && 10#$port <= 65535)) ||
  die "--port takes a port number from 1 to 65535, not '$port'"
replicas=$((10#$replicas)) port=$((10#$port))
command -v haproxy >/dev/null || die "haproxy is missing: install it (apt-get install haproxy)"
"$PYTHON" -c "import streamlit" 2>/dev/null ||
  die "'$PYTHON' cannot import streamlit: install the app (pip install -r requirements.txt) or set PYTHON"
"$PYTHON" - "$address" "$port" <<'EOF' || exit 2
import socket, sys
address, port = sys.argv[1], int(sys.argv[2])
try:
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as sock:
        sock.bind((address, port))
except OSError as error:
    sys.exit(f"local_cluster.sh: cannot listen on {address}:{port} ({error.strerror or error}): "
             "another program uses that port, or the address is not this machine's; choose another with --port")
EOF
if [[ -z $logs ]]; then
  logs="$(mktemp -d -t fer-lab-cluster.XXXXXX)"
fi
mkdir -p "$logs" || die "cannot make the log folder $logs"

# Free ports for the replicas, each asked of the system on 127.0.0.1.
mapfile -t ports < <("$PYTHON" - "$replicas" <<'EOF'
import socket, sys
sockets = [socket.create_server(("127.0.0.1", 0)) for _ in range(int(sys.argv[1]))]
print("\n".join(str(sock.getsockname()[1]) for sock in sockets))
EOF
)

pids=()
names=()
stop_all() {
  trap - TERM INT EXIT
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for _ in $(seq 1 40); do  # up to 10 s for a clean stop, then no more waiting
    alive=0
    for pid in "${pids[@]}"; do
      kill -0 "$pid" 2>/dev/null && alive=1
    done
    ((alive)) || break
    sleep 0.25
  done
  for pid in "${pids[@]}"; do
    kill -KILL "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}
trap 'stop_all; exit 143' TERM
trap 'stop_all; exit 130' INT
trap stop_all EXIT

healthy() {  # whether $1 answers 200
  "$PYTHON" -c "import sys, urllib.request; sys.exit(urllib.request.urlopen(sys.argv[1], timeout=2).status != 200)" \
    "$1" 2>/dev/null
}

servers=""
for i in $(seq 1 "$replicas"); do
  name="r$i" replica_port="${ports[i - 1]}"
  (cd "$ROOT" && exec env FER_LAB_REPLICA="$name" "$PYTHON" -m streamlit run app.py --server.headless true \
    --server.port "$replica_port" --server.address 127.0.0.1 --browser.gatherUsageStats false \
    --server.fileWatcherType none) >"$logs/$name.log" 2>&1 &
  pids+=("$!")
  names+=("$name")
  servers+="    server $name 127.0.0.1:$replica_port check inter 2s cookie $name"$'\n'
done

deadline=$((SECONDS + START_SECONDS))
for i in $(seq 1 "$replicas"); do
  until healthy "http://127.0.0.1:${ports[i - 1]}/_stcore/health"; do
    if ! kill -0 "${pids[i - 1]}" 2>/dev/null; then
      echo "local_cluster.sh: replica r$i exited while starting; the end of $logs/r$i.log:" >&2
      tail -n 20 "$logs/r$i.log" >&2
      exit 1
    fi
    ((SECONDS < deadline)) || {
      echo "local_cluster.sh: replica r$i did not answer in $START_SECONDS s; see $logs/r$i.log" >&2
      exit 1
    }
    sleep 0.5
  done
done

cat >"$logs/haproxy.cfg" <<EOF
# Made by deploy/local_cluster.sh; deploy/haproxy.cfg is the production one.
global
    maxconn 4096

defaults
    mode http
    timeout connect 5s
    timeout client 1m
    timeout server 1m
    # A session's WebSocket (/_stcore/stream) stays open as long as its browser tab.
    timeout tunnel 8h
    timeout client-fin 10s

frontend fer_lab
    bind $address:$port
    default_backend replicas

backend replicas
    # A new session goes to the replica with the fewest connections (each session holds a WebSocket);
    # the cookie keeps it there.
    balance leastconn
    cookie SERVERID insert indirect nocache httponly
    option httpchk GET /_stcore/health
$servers
EOF
haproxy -c -q -f "$logs/haproxy.cfg" || die "HAProxy refused $logs/haproxy.cfg"
haproxy -db -f "$logs/haproxy.cfg" >"$logs/haproxy.log" 2>&1 &
pids+=("$!")
names+=("haproxy")
until healthy "http://$address:$port/_stcore/health"; do
  if ! kill -0 "${pids[-1]}" 2>/dev/null; then
    echo "local_cluster.sh: HAProxy exited while starting:" >&2
    tail -n 20 "$logs/haproxy.log" >&2
    exit 1
  fi
  ((SECONDS < deadline)) || die "HAProxy did not answer on $address:$port in $START_SECONDS s; see $logs/haproxy.log"
  sleep 0.25
done

host="$address"
[[ $host == 0.0.0.0 ]] && host="localhost"
echo "FER Lab: http://$host:$port ($replicas replica(s) behind HAProxy; Ctrl-C stops them)"
for i in $(seq 1 "$replicas"); do
  echo "  r$i: http://127.0.0.1:${ports[i - 1]} (log: $logs/r$i.log)"
done
echo "  HAProxy log and configuration: $logs"

# Run until a signal, or until one of them exits.
set +e
wait -n "${pids[@]}"
status=$?
for i in "${!pids[@]}"; do
  if ! kill -0 "${pids[i]}" 2>/dev/null; then
    echo "local_cluster.sh: ${names[i]} exited (status $status); stopping the others. Logs: $logs" >&2
    break
  fi
done
exit 1
