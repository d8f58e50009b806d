#!/usr/bin/env bash
# Two "hosts" on one machine: network namespaces joined by a veth pair, one weft-run node in
# each (--nnodes 2), running a test worker across them (tests/distributed/$WEFT_MH_WORKER,
# default ddp_worker). Each namespace gets its own WEFT_SHM_HOST_ID, as two machines would have
# different host names and boot ids: ranks share memory within a "host" only, so the Gloo group's
# all-reduce is hierarchical. Exit 77 when namespaces cannot be made here.
# Usage: [WEFT_MH_WORKER=name] multihost.sh BUILD_DIR WORKER_ARGS...
set -u
build=$1
shift
worker="$build/tests/distributed/${WEFT_MH_WORKER:-ddp_worker}"
id=$$
a=weftA$id b=weftB$id
cleanup() {
  ip netns del "$a" 2>/dev/null
  ip netns del "$b" 2>/dev/null
}
trap cleanup EXIT
if ! ip netns add "$a" 2>/dev/null; then
  echo "network namespaces are not available here (ip netns add failed)"
  exit 77
fi
ip netns add "$b" || exit 77
ip link add "va$id" type veth peer name "vb$id" || exit 77
ip link set "va$id" netns "$a" && ip link set "vb$id" netns "$b" || exit 77
ip -n "$a" addr add 10.123.45.1/24 dev "va$id" && ip -n "$a" link set "va$id" up && ip -n "$a" link set lo up
ip -n "$b" addr add 10.123.45.2/24 dev "vb$id" && ip -n "$b" link set "vb$id" up && ip -n "$b" link set lo up
port=$((20000 + id % 20000))
common=(--nnodes 2 --nproc-per-node 2 --master-addr 10.123.45.1 --master-port "$port")
ip netns exec "$a" env WEFT_SHM_HOST_ID="host-$a" timeout 120 "$build/tools/weft-run" "${common[@]}" --node-rank 0 "$worker" "$@" > "/tmp/weft_mh_$id.a" 2>&1 &
pa=$!
ip netns exec "$b" env WEFT_SHM_HOST_ID="host-$b" timeout 120 "$build/tools/weft-run" "${common[@]}" --node-rank 1 "$worker" "$@" > "/tmp/weft_mh_$id.b" 2>&1 &
pb=$!
wait $pa; ra=$?
wait $pb; rb=$?
echo "--- node 0 (10.123.45.1) exit $ra"; cat "/tmp/weft_mh_$id.a"
echo "--- node 1 (10.123.45.2) exit $rb"; cat "/tmp/weft_mh_$id.b"
rm -f "/tmp/weft_mh_$id.a" "/tmp/weft_mh_$id.b"
[ $ra -eq 0 ] && [ $rb -eq 0 ]
