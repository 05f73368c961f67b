#!/usr/bin/env bash
# make demo: the showcase. Builds a small network in namespaces of its own,
# runs the appliance, sends real traffic through it and tells what happened.
#
#   client ── br-up ── up0 [ghostrouter] lan0 ── br-lan ──┬─ server s0 10.0.0.11 + ghost on lo
#   198.51.100.10      198.51.100.1   10.0.0.1            ├─ server s1 10.0.0.12 + ghost on lo
#   + 8 more client addresses   (namespace "rtr")         └─ server s2 10.0.0.13 + ghost on lo
#
# Everything lives in namespaces named gr-demo-*-SUFFIX and is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "make demo: run as root (it creates network namespaces)"; exit 1; }
for tool in ip tcpdump nft; do
  command -v "$tool" >/dev/null || { echo "make demo: $tool is missing (apt-get install iproute2 tcpdump nftables)"; exit 1; }
done

BIN=$PWD/bin
SUF=$(printf '%04x' $((RANDOM % 65536)))
WORK=$(mktemp -d /tmp/ghostrouter-demo.XXXXXX)
PIDS=()
GHOST=203.0.113.10
BCAST=10.0.0.250

cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  for ns in $(ip netns list | awk -v s="-$SUF" '$1 ~ "^gr-demo-" && substr($1, length($1) - length(s) + 1) == s {print $1}'); do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  if [ -n "${DEMO_KEEP:-}" ]; then echo "demo files kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say()  { printf '\n\033[1m== %s\033[0m\n' "$*"; }
note() { printf '   %s\n' "$*"; }
# mkns runs in $(...): cleanup finds the namespaces by their suffix.
mkns() { local n="gr-demo-$1-$SUF"; ip netns add "$n"; ip -n "$n" link set lo up; echo "$n"; }
# inns runs a command in a namespace; background processes use ip netns exec
# directly so that $! is the process itself.
inns() { local n=$1; shift; ip netns exec "$n" "$@"; }

say "Building the network (namespaces gr-demo-*-$SUF)"
CLI=$(mkns cli); RTR=$(mkns rtr)
ip link add c0 netns "$CLI" type veth peer name u-c netns "$RTR"
inns "$RTR" ip link add br-up type bridge
inns "$RTR" ip link add br-lan type bridge
for br in br-up br-lan; do
  inns "$RTR" ip link set "$br" type bridge stp_state 0 forward_delay 0
  inns "$RTR" ip link set "$br" up
done
inns "$RTR" sysctl -qw net.bridge.bridge-nf-call-iptables=0 2>/dev/null || true
inns "$RTR" ip link set u-c master br-up up
inns "$CLI" ip link set c0 up
inns "$CLI" ip addr add 198.51.100.10/24 dev c0
CLIENTS=()
for i in $(seq 20 27); do
  inns "$CLI" ip addr add "198.51.100.$i/32" dev c0
  CLIENTS+=("198.51.100.$i")
done
inns "$CLI" ip route add default via 198.51.100.1
SRV=()
PEER=()
start_peer() { # $1 = server index: the HTTP (80) and UDP (9000) service
  ip netns exec "${SRV[$1]}" "$BIN/peer" serve -name "s$1" -http :80 -udp :9000 -lifetime 10m >>"$WORK/peer-s$1.log" 2>&1 &
  PEER[$1]=$!
  PIDS+=($!)
  for _ in $(seq 50); do grep -q ready "$WORK/peer-s$1.log" 2>/dev/null && break; sleep 0.1; done
}
for i in 0 1 2; do
  S=$(mkns "srv$i"); SRV+=("$S")
  ip link add "l-s$i" netns "$RTR" type veth peer name e0 netns "$S"
  inns "$RTR" ip link set "l-s$i" master br-lan up
  inns "$S" ip link set e0 up
  inns "$S" ip addr add "10.0.0.1$((i + 1))/24" dev e0
  inns "$S" ip route add default via 10.0.0.1
  start_peer "$i"
done
note "client 198.51.100.10 (+ 8 client addresses 198.51.100.20-27), servers s0 s1 s2 on 10.0.0.0/24"

config() { # $1 = mode
  cat <<EOF
[router]
log_level = "info"
control_socket = "$WORK/ctl.sock"
metrics_address = ""

[[interface]]
name = "up0"
addresses = ["198.51.100.1/24"]
bridge = "br-up"

[[interface]]
name = "lan0"
addresses = ["10.0.0.1/24"]
bridge = "br-lan"

[[cluster]]
name = "web"
address = "$GHOST"
interface = "lan0"
mode = "$1"
$( [ "$1" = broadcast ] && printf 'broadcast_address = "%s"\nannounce_key_file = "%s"\nannounce_interval = "500ms"\n' "$BCAST" "$WORK/announce.key" )
hash = "jhash"
seed = 0x5eed
buckets = 4096
EOF
  for i in 0 1 2; do printf '\n  [[cluster.server]]\n  id = %d\n  address = "10.0.0.1%d"\n' "$i" $((i + 1)); done
  printf '\n  [cluster.health]\n  check = "tcp"\n  port = 80\n  interval = "250ms"\n  timeout = "200ms"\n  rise = 2\n  fall = 3\n'
}

start_appliance() { # $1 = mode
  # The pair that signs the table announcements: the appliance holds the
  # private key, every server's ghostnode run the public one (announce.pub).
  [ -e "$WORK/announce.key" ] || "$BIN/ghostrouter" keygen --private "$WORK/announce.key" >/dev/null
  config "$1" >"$WORK/ghostrouter.toml"
  ip netns exec "$RTR" "$BIN/ghostrouter" run -c "$WORK/ghostrouter.toml" >"$WORK/ghostrouter-$1.log" 2>&1 &
  APP=$!
  PIDS+=("$APP")
  for _ in $(seq 100); do
    inns "$RTR" "$BIN/ghostrouter" status --socket "$WORK/ctl.sock" >/dev/null 2>&1 && return 0
    kill -0 "$APP" 2>/dev/null || break
    sleep 0.1
  done
  echo "the appliance did not start:"; cat "$WORK/ghostrouter-$1.log"; exit 1
}

stop_appliance() {
  kill -TERM "$APP"; wait "$APP" 2>/dev/null || true
}

setup_servers() { # $1 = mode
  for i in 0 1 2; do
    if [ "$1" = broadcast ]; then
      # ghostnode run: sets the server up, then follows the appliance's table announcements
      ip netns exec "${SRV[$i]}" "$BIN/ghostnode" run -c "$WORK/ghostrouter.toml" --cluster web --id "$i" --state-dir "$WORK/node$i" >"$WORK/ghostnode-s$i.log" 2>&1 &
      NODE[$i]=$!
      PIDS+=($!)
    elif [ -x "$BIN/ghostnode" ]; then
      inns "${SRV[$i]}" "$BIN/ghostnode" setup -c "$WORK/ghostrouter.toml" --cluster web --id "$i" --state-dir "$WORK/node$i" >"$WORK/ghostnode-s$i.log" 2>&1 \
        || { cat "$WORK/ghostnode-s$i.log"; exit 1; }
    else
      inns "${SRV[$i]}" ip addr add "$GHOST/32" dev lo
      inns "${SRV[$i]}" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.e0.rp_filter=0
    fi
  done
}

NODE=()
wait_node_tables() {
  for i in 0 1 2; do
    for _ in $(seq 100); do grep -q "applied" "$WORK/ghostnode-s$i.log" 2>/dev/null && break; sleep 0.1; done
  done
}

teardown_servers() {
  for i in 0 1 2; do
    if [ -n "${NODE[$i]:-}" ]; then kill -TERM "${NODE[$i]}" 2>/dev/null; wait "${NODE[$i]}" 2>/dev/null || true; NODE[$i]=""; fi
    if [ -x "$BIN/ghostnode" ]; then
      inns "${SRV[$i]}" "$BIN/ghostnode" teardown --cluster web --state-dir "$WORK/node$i" >>"$WORK/ghostnode-s$i.log" 2>&1 || true
    else
      inns "${SRV[$i]}" ip addr del "$GHOST/32" dev lo 2>/dev/null || true
    fi
  done
}

# dispatch_round MODE: each client asks the ghost over HTTP and UDP; compare
# with what `ghostrouter lookup` predicts; show the LAN capture.
dispatch_round() {
  local mode=$1 predicted=${2:-}
  ip netns exec "$RTR" tcpdump -i br-lan -n -e -U --immediate-mode -s 128 -w "$WORK/lan-$mode.pcap" "ip dst $GHOST" >"$WORK/tcpdump-$mode.log" 2>&1 &
  local TD=$!
  PIDS+=("$TD")
  for _ in $(seq 50); do grep -q listening "$WORK/tcpdump-$mode.log" && break; sleep 0.1; done
  local src
  src=$(IFS=,; echo "${CLIENTS[*]}")
  inns "$CLI" "$BIN/peer" http -url "http://$GHOST/" -src "$src" >"$WORK/http-$mode.txt"
  inns "$CLI" "$BIN/peer" udp -dst "$GHOST:9000" -src "$src" >"$WORK/udp-$mode.txt"
  if [ -n "$predicted" ]; then
    cp "$predicted" "$WORK/lookup-$mode.txt"
  else
    "$BIN/ghostrouter" lookup -c "$WORK/ghostrouter.toml" "${CLIENTS[@]}" >"$WORK/lookup-$mode.txt"
  fi
  sleep 0.3; kill -TERM "$TD"; wait "$TD" 2>/dev/null || true
  printf '   %-15s %-8s %-10s %-10s %s\n' CLIENT BUCKET PREDICTED "HTTP FROM" "UDP FROM"
  local ok=0 total=0
  while read -r c b id addr; do
    [ "$c" = CLIENT ] && continue
    local h u
    h=$(awk -v c="$c" '$1==c && $2=="OK" {print $3}' "$WORK/http-$mode.txt")
    u=$(awk -v c="$c" '$1==c && $2=="OK" {print $3}' "$WORK/udp-$mode.txt")
    total=$((total + 1))
    local mark="MISMATCH"
    if [ "$h" = "s$id" ] && [ "$u" = "s$id" ]; then mark="ok"; ok=$((ok + 1)); fi
    printf '   %-15s %-8s %-10s %-10s %-10s %s\n' "$c" "$b" "s$id" "${h:-none}" "${u:-none}" "$mark"
  done <"$WORK/lookup-$mode.txt"
  note "$ok of $total clients answered over HTTP and UDP by exactly the predicted server"
  note "what crossed the LAN (tcpdump -e on br-lan, first packets to the ghost):"
  tcpdump -r "$WORK/lan-$mode.pcap" -n -e >"$WORK/lan-$mode.txt" 2>/dev/null || true
  head -6 "$WORK/lan-$mode.txt" | cut -c1-150 | sed 's/^/     /'
  local n
  n=$(tcpdump -r "$WORK/lan-$mode.pcap" -n 2>/dev/null | wc -l)
  note "$n packets to the ghost on the LAN in all; ICMP redirects seen: $(tcpdump -r "$WORK/lan-$mode.pcap" -n 'icmp[0] == 5' 2>/dev/null | wc -l)"
  [ "$ok" = "$total" ] || { echo "demo: dispatch mismatch"; exit 1; }
}

say "1. A plain router: the client pings server s0 through the appliance"
start_appliance routing
inns "$CLI" ping -c 3 -i 0.2 -W 2 10.0.0.11 | sed 's/^/   /' | grep -E "bytes from|packet loss"
note "TTL 1 gets ICMP time exceeded from the appliance, as from any router:"
inns "$CLI" ping -c 1 -t 1 -W 2 10.0.0.11 2>&1 | grep -i "exceeded" | sed 's/^/   /' || true

say "2. Routing mode: ghost $GHOST, each client hashed to one server, sent to that server's MAC"
setup_servers routing
note "server MACs: s0 $(inns "${SRV[0]}" cat /sys/class/net/e0/address)  s1 $(inns "${SRV[1]}" cat /sys/class/net/e0/address)  s2 $(inns "${SRV[2]}" cat /sys/class/net/e0/address)"
dispatch_round routing
say "ghostrouter status"
inns "$RTR" "$BIN/ghostrouter" status --socket "$WORK/ctl.sock" | sed -n '/^cluster/,/counters/p' | sed 's/^/   /'

say "3. Server s1 fails: only its clients move, evenly, to the others"
kill -KILL "${PEER[1]}"; wait "${PEER[1]}" 2>/dev/null || true
note "s1's service is stopped; the appliance's health checks (tcp/80 every 250ms, fall 3) notice:"
for _ in $(seq 50); do
  inns "$RTR" "$BIN/ghostrouter" status --socket "$WORK/ctl.sock" | grep -q "^  1 .* down" && break
  sleep 0.1
done
inns "$RTR" "$BIN/ghostrouter" status --socket "$WORK/ctl.sock" | grep -E "event:" | tail -1 | sed 's/^ */   /'
cp "$WORK/lookup-routing.txt" "$WORK/lookup-before.txt"
"$BIN/ghostrouter" lookup -c "$WORK/ghostrouter.toml" --down 1 "${CLIENTS[@]}" >"$WORK/lookup-down.txt"
dispatch_round failover "$WORK/lookup-down.txt"
note "before -> after the failure:"
paste "$WORK/lookup-before.txt" "$WORK/lookup-down.txt" | awk 'NR>1 {printf "     %-15s s%s -> s%s%s\n", $1, $3, $7, ($3 == $7 ? "" : "   (moved)")}'
start_peer 1
for _ in $(seq 50); do
  inns "$RTR" "$BIN/ghostrouter" status --socket "$WORK/ctl.sock" | grep -q "^  1 .* up" && break
  sleep 0.1
done
note "s1 is back: $(inns "$RTR" "$BIN/ghostrouter" status --socket "$WORK/ctl.sock" | grep -E "event:" | tail -1 | sed 's/^ *event: //' | cut -c1-110)"
stop_appliance
teardown_servers

if [ -x "$BIN/ghostnode" ] && "$BIN/ghostnode" help 2>&1 | grep -q broadcast; then
  say "4. Broadcast mode: ghost routed via second ghost $BCAST = ff:ff:ff:ff:ff:ff; each server's filter keeps its share"
  start_appliance broadcast
  setup_servers broadcast
  wait_node_tables
  note "each server's ghostnode run applied the appliance's announced table:"
  for i in 0 1 2; do grep -m1 "applied" "$WORK/ghostnode-s$i.log" | sed 's/.*msg="//; s/".*//' | sed "s/^/     s$i: /"; done
  dispatch_round broadcast
  note "the appliance's permanent entry for the second ghost:"
  inns "$RTR" "$BIN/ghostrouter" status --socket "$WORK/ctl.sock" | grep -i "permanent" | sed 's/^/   /'
  note "filter counters on each server (accepted = its own clients, dropped = the others'):"
  for i in 0 1 2; do
    inns "${SRV[$i]}" "$BIN/ghostnode" status --cluster web --state-dir "$WORK/node$i" 2>&1 | grep -iE "owned|accept|drop" | head -4 | sed "s/^/   s$i: /"
  done
  stop_appliance
  teardown_servers
fi

say "Done: every client was answered by the server the hash predicts; the network is being removed."
