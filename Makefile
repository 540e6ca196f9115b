# usernode's build and test entry points. `make test` is what CI runs.
GO ?= go
BIN := bin/usernode
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS := -X github.com/usernode/usernode/pkg/cmd.Version=$(VERSION)
# Integration tests run the built binary as a non-root user (internal/testutil).
export USERNODE_BIN := $(CURDIR)/$(BIN)

.PHONY: build test test-unit test-integration test-user vet lint lint-go lint-shell clean

# Static (CGO_ENABLED=0): the binary doubles as the pods' pause process.
build:
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/usernode

# Seconds: pure logic over fixtures, no kernel features, no other user.
# Under the race detector (needs cgo: gcc, from hack/install-deps.sh); the
# first run builds the race runtime's standard library, minutes on 2 cores.
test-unit:
	$(GO) test -race -short -count=1 ./...

# The node tests' Kubernetes, from `make k8s`'s cache (built on first use,
# ~19 min on 2 idle cores, then reused). Run as root, the tests drop to a user who
# cannot read root's cache, so the binaries are copied to a readable dir.
K8S_TEST_DIR ?= $(if $(filter 0,$(shell id -u)),/opt/usernode-k8s)
# containerd 2.x (hack/build-containerd.sh) goes in a directory of its own:
# `up` looks for containerd, ctr and the shim in PATH only (not in
# --bin-dir), but a copy of the Kubernetes dir put in PATH would have 2.x
# stand in for the system's 1.x. The tests find it in USERNODE_CONTAINERD2.
CONTAINERD2_TEST_DIR := $(if $(K8S_TEST_DIR),$(K8S_TEST_DIR)/containerd2)

# Everything CI runs: vet, lint, the unit tier under the race detector,
# then every test (the integration tests as a non-root user, created here
# when run as root, the node's included).
test: vet lint test-unit build test-user
	GO=$(GO) ./hack/build-k8s.sh $(K8S_TEST_DIR) > bin/k8s-dir.out
	tail -n1 bin/k8s-dir.out > bin/k8s-dir
	GO=$(GO) ./hack/build-flannel.sh $(K8S_TEST_DIR) > bin/flannel-dir.out
	GO=$(GO) ./hack/build-crio.sh $(K8S_TEST_DIR) > bin/crio-dir.out
	GO=$(GO) ./hack/build-metrics-server.sh $(K8S_TEST_DIR) > bin/metrics-server-dir.out
	GO=$(GO) ./hack/build-containerd.sh $(CONTAINERD2_TEST_DIR) > bin/containerd2-dir.out
	USERNODE_K8S_BIN="$$(cat bin/k8s-dir)" USERNODE_CONTAINERD2="$$(tail -n1 bin/containerd2-dir.out)" \
		$(GO) test -count=1 -p 1 -timeout 45m ./...

test-user:
	@if [ "$$(id -u)" -eq 0 ]; then ./hack/test-user.sh; else echo "make test-user: running as $$(id -un), tests use this account"; fi

vet:
	$(GO) vet -tags faults ./...

# Static checks: golangci-lint (.golangci.yml) over the main module and
# shellcheck over the shell scripts (hack/lint-shell.sh finds them by name
# and by #! line). Both run even if the first fails, so one run shows all.
# The nested modules (k8s/, tools/) are outside the main module's ./... and
# are neither linted nor tested here.
# golangci-lint is built from tools/ (pinned there, so the main go.mod
# does not gain its dependencies) into the user's cache,
# $${USERNODE_CACHE:-~/.cache/usernode}/tools/<key>/, the key a hash of
# tools/go.mod and tools/go.sum: it is rebuilt only when the pin changes,
# and a fresh clone (CI's) finds it built.
# Times on this 2-core machine: cold (empty Go build and lint caches) on
# an idle machine, building golangci-lint 3.1 min and its first run
# 2.5 min; with a Kubernetes build beside it 19.4 min in all; warm ~3 s.
TOOLS_KEY := $(shell cat tools/go.mod tools/go.sum 2>/dev/null | sha256sum | cut -c1-16)
TOOLS_CACHE := $(or $(USERNODE_CACHE),$(XDG_CACHE_HOME:%=%/usernode),$(HOME)/.cache/usernode)/tools
GOLANGCI_LINT := $(TOOLS_CACHE)/$(TOOLS_KEY)/golangci-lint

lint:
	@rc=0; \
	$(MAKE) --no-print-directory lint-go || rc=1; \
	$(MAKE) --no-print-directory lint-shell || rc=1; \
	exit $$rc

lint-go: $(GOLANGCI_LINT)
	$(GOLANGCI_LINT) run ./...

lint-shell:
	./hack/lint-shell.sh

$(GOLANGCI_LINT):
	rm -rf $(TOOLS_CACHE)
	cd tools && $(GO) build -o $@.tmp github.com/golangci/golangci-lint/v2/cmd/golangci-lint
	mv $@.tmp $@

clean:
	rm -rf bin

# Network benchmark (bench/netbench): port forwarders and namespace egress
# side by side; usernode's row is `usernode sandbox run -p` from this
# build. Run as root: it drops to the test user for everything rootless
# and makes lxcbr0 and a root veth pair for the bound. Needs a C compiler
# (cc) for its second client.
.PHONY: bench-net
# RootlessKit v2, a peer in the table, from the Go module proxy.
ROOTLESSKIT2 ?= v2.3.6

bench-net: build test-user
	$(GO) build -o bin/netbench ./bench/netbench
	GOBIN=$(CURDIR)/bin/rootlesskit2 $(GO) install \
		github.com/rootless-containers/rootlesskit/v2/cmd/rootlesskit@$(ROOTLESSKIT2) \
		github.com/rootless-containers/rootlesskit/v2/cmd/rootlessctl@$(ROOTLESSKIT2)
	./bin/netbench -rounds 5 -t 2 -rootlesskit2 $(CURDIR)/bin/rootlesskit2 -usernode $(BIN)

# Kubernetes (kubelet, kube-apiserver, kube-controller-manager,
# kube-scheduler, kube-proxy, kubectl), etcd and CoreDNS, built from the Go
# module proxy with the modules pinned in k8s/: the daemons as links to one
# executable, kube-node (k8s/README.md). Cached by input hash under
# $${USERNODE_CACHE:-~/.cache/usernode}/bin/<key>/; the last line printed is
# the directory holding the binaries. `make k8s K8S_OUTDIR=dir` also copies
# them to dir (containerd 2.x to dir/containerd2). Flanneld, CRI-O and
# metrics-server (`up --metrics`) come from scripts of their own, each
# with its own cache key. Not part of `make test`.
.PHONY: k8s k8s-clean
k8s:
	GO=$(GO) ./hack/build-k8s.sh $(K8S_OUTDIR)
	GO=$(GO) ./hack/build-flannel.sh $(K8S_OUTDIR)
	GO=$(GO) ./hack/build-crio.sh $(K8S_OUTDIR)
	GO=$(GO) ./hack/build-metrics-server.sh $(K8S_OUTDIR)
	GO=$(GO) ./hack/build-containerd.sh $(if $(K8S_OUTDIR),$(K8S_OUTDIR)/containerd2)

k8s-clean:
	./hack/build-k8s.sh --clean

# `usernode up` benchmark (bench/up, docs/benchmarks.md): time to node
# Ready and to the first pod Running, and the memory of every process of
# the node, against the same binaries started by hand under RootlessKit
# (bench/up/hardway.sh); cold and warm starts, interleaved rounds. Run as
# root: it drops to the test user. Extra flags: BENCH_UP_FLAGS='-v'.
.PHONY: bench-up
bench-up: build test-user
	$(GO) build -o bin/benchup ./bench/up
	./bin/benchup -rounds 3 -usernode $(BIN) $(BENCH_UP_FLAGS)

# The VM tier (docs/vm.md): usernode on real cgroup v2 with systemd
# delegation, in a throwaway Debian 12 VM under qemu TCG. Root (debootstrap
# builds the image, cached under $${USERNODE_CACHE:-~/.cache/usernode}/vm/).
# Fails if any check fails; prints the tier's time. Results: bin/test-vm/.
.PHONY: test-vm
test-vm: build
	GO=$(GO) ./hack/build-k8s.sh $(K8S_TEST_DIR) > bin/k8s-dir-vm.out
	GO=$(GO) ./hack/build-crio.sh $(K8S_TEST_DIR) > /dev/null
	GO=$(GO) ./hack/build-containerd.sh $(CONTAINERD2_TEST_DIR) > /dev/null
	./hack/vm/test-vm.sh $(BIN) "$$(tail -n1 bin/k8s-dir-vm.out)"

# The fault-injection suite (test/integration/faultsuite_test.go, built
# with the faults tag so `make test` does not run it): kill -9 of each
# component, the network helper, the agent and init; SIGSTOP of etcd;
# power cuts at and during `up`; down during up; two ups at once; the
# state dir's filesystem full (root: a loop-mounted ext4 it makes). Each
# case asserts recovery and no leak after down; the times to recover go
# to bin/faults.md (docs/reliability.md has a run's).
.PHONY: test-faults
test-faults: build test-user
	GO=$(GO) ./hack/build-k8s.sh $(K8S_TEST_DIR) > bin/k8s-dir.out
	rm -f bin/faults.md
	USERNODE_K8S_BIN="$$(tail -n1 bin/k8s-dir.out)" USERNODE_FAULTS_REPORT=$(CURDIR)/bin/faults.md \
		$(GO) test -tags faults -count=1 -p 1 -timeout 30m -run 'TestFaults' -v ./test/integration/

# Multi-node benchmark (bench/multinode, docs/benchmarks.md): pod-to-pod
# TCP throughput and RTT across two "hosts" (network namespaces on a
# bridge) and on one node, against a VXLAN made by root between two
# namespaces as the bound, and `usernode join` to Ready; interleaved
# rounds, medians. Run as root: it makes the namespaces and two accounts
# of its own (accounts.sh), and runs each host's node as one of them.
# Static, because the same binary is copied into the pods as the tool.
# Extra flags: BENCH_MULTINODE_FLAGS='-v'.
.PHONY: bench-multinode
bench-multinode: build
	./bench/multinode/accounts.sh
	CGO_ENABLED=0 $(GO) build -o bin/multinode ./bench/multinode
	./bin/multinode -rounds 3 -t 3 -usernode $(BIN) -bin-dir /opt/usernode-k8s $(BENCH_MULTINODE_FLAGS)

# Upstream [NodeConformance] against `usernode up` (docs/conformance.md):
# e2e.test, agnhost and ginkgo built from the Go module proxy at the
# cluster's Kubernetes version (hack/build-e2e.sh, cached by input hash),
# the images the tests run built locally (test/conformance/e2eimages), a
# node brought up as the test user, the suite run with Kubernetes' rootless
# CI job's skips plus hack/conformance-skips.txt. Prints passed/failed/
# skipped; the JUnit report and logs land in bin/conformance/.
# CONFORMANCE_FOCUS narrows the run (CI runs a declared subset: .ci/run).
.PHONY: conformance
conformance: build test-user
	GO=$(GO) ./hack/build-k8s.sh $(K8S_TEST_DIR) > bin/k8s-dir-conformance.out
	GO=$(GO) ./hack/build-e2e.sh > bin/e2e-dir.out
	GO=$(GO) ./hack/conformance.sh $(BIN) "$$(tail -n1 bin/k8s-dir-conformance.out)" "$$(tail -n1 bin/e2e-dir.out)"

# The same specs against a node in full mode (cgroup v2 delegated by
# systemd), in the VM tier's Debian 12 VM under qemu TCG (docs/vm.md):
# 77 min for CI's subset, so not part of .ci/run. Root (the VM image).
# CONFORMANCE_EXTRA_SKIPS=hack/conformance-ci-skips.txt for CI's subset;
# CONFORMANCE_PROCS (4), CONFORMANCE_TIMEOUT (4h) and USERNODE_VM_MEM
# (8192) tune it. Results: bin/conformance-vm/ (docs/conformance.md).
.PHONY: conformance-vm
conformance-vm: build
	GO=$(GO) ./hack/build-k8s.sh $(K8S_TEST_DIR) > bin/k8s-dir-conformance-vm.out
	GO=$(GO) ./hack/build-e2e.sh > bin/e2e-dir-vm.out
	GO=$(GO) ./hack/vm/conformance-vm.sh $(BIN) "$$(tail -n1 bin/k8s-dir-conformance-vm.out)" "$$(tail -n1 bin/e2e-dir-vm.out)"
