#!/usr/bin/env bash
# Make sure a Redis answers on 127.0.0.1:6379 (the tests' broker and store): start one if none does,
# install it with apt-get first if the machine has none.
set -euo pipefail
HOST=127.0.0.1
PORT=${REDIS_PORT:-6379}

answers() {
  python3 - "$HOST" "$PORT" <<'PY'
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1) as s:
        s.sendall(b"PING\r\n")
        sys.exit(0 if s.recv(16).startswith(b"+PONG") else 1)
except OSError:
    sys.exit(1)
PY
}

if answers; then
  echo "redis: answering on $HOST:$PORT"
  exit 0
fi
if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis: not installed; installing redis-server with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq redis-server >/dev/null
fi
echo "redis: starting redis-server on $HOST:$PORT"
mkdir -p /tmp/tracehook-redis
redis-server --daemonize yes --bind "$HOST" --port "$PORT" --save "" --appendonly no \
  --dir /tmp/tracehook-redis --logfile /tmp/tracehook-redis/redis.log
for _ in $(seq 1 50); do
  if answers; then echo "redis: up"; exit 0; fi
  sleep 0.1
done
echo "redis: did not answer on $HOST:$PORT; see /tmp/tracehook-redis/redis.log" >&2
exit 1
