# spoa-auth: build, test, run.
#
#   make            build build/spoa-auth (never runs apt-get; make deps installs the
#                   missing Debian packages, and run, test, unit, e2e, bench, chaos do first)
#   make run        start HAProxy + agent + demo services on localhost
#   make fleet-demo two gateways (HAProxy + agent each) sharing one Redis (docs/fleet.md)
#   make test       unit tests, fuzz smoke run, end-to-end tests (release and ASan/UBSan)
#   make unit       C unit tests only          make e2e    pytest suite only
#   make asan       unit + e2e in an ASan/UBSan build (build-asan/)
#   make tsan       concurrent unit tests under ThreadSanitizer (build-tsan/)
#   make alerts     promtool check + unit test of scripts/spoa-auth.rules.yml
#   make fuzz       build the libFuzzer targets (FUZZ_CC, clang; fuzz-build: without deps);
#                   make fuzz-run FUZZ_SECONDS=60
#   make opts       print the effective flags
#   make install    install (PREFIX, DESTDIR, SBINDIR, SYSCONFDIR, UNITDIR); make uninstall
#   make deb        Debian binary package in build/    make verify-unit  systemd-analyze the unit
#   make bench      throughput/latency vs HAProxy alone and nginx auth_request (docs/benchmarks.md)
#   make chaos      faults under steady load, met/missed per fault (docs/reliability.md; ~7 min)
#   make soak       SOAK_SECONDS (600) of Zipf load with reloads: RSS, fds, wrong answers;
#                   make soak-asan: the same, shorter (SOAK_SECONDS 120), in the ASan build
#
# Variables: CC, CFLAGS, SANITIZER=address|undefined|thread (comma list ok),
# ERR=1 (-Werror), DEBUG=1 (-O0), BUILD=dir, FUZZ_CC, HAPROXY_BIN, PREFIX, DESTDIR, SBINDIR.
# Every object, unit test, fuzz target and bench tool depends on the headers it
# includes (-MMD .d files) and on its directory's flags stamp (.flags).

CC       ?= cc
PKG_CONFIG ?= pkg-config
CFLAGS   ?= -O2 -g
STD      := -std=c11 -D_GNU_SOURCE
WARN     := -Wall -Wextra -Wundef -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wformat=2 -Wno-missing-field-initializers
BUILD    ?= build
FUZZ_BUILD := build-fuzz
PYTHON   ?= /usr/bin/python3

ifeq ($(ERR),1)
WARN += -Werror
endif
ifeq ($(DEBUG),1)
CFLAGS := -O0 -g3
endif
# Sanitizer flags live in their own variable so that a CFLAGS given on the
# command line (make asan passes one) cannot drop them from the compile step.
SAN_FLAGS :=
ifneq ($(SANITIZER),)
SAN_FLAGS := -fsanitize=$(SANITIZER) -fno-sanitize-recover=all -fno-omit-frame-pointer
LDFLAGS += -fsanitize=$(SANITIZER)
endif

DEP_CFLAGS := $(shell $(PKG_CONFIG) --cflags libcurl openssl msgpack libmicrohttpd libnghttp2 hiredis 2>/dev/null)
DEP_LIBS   := $(shell $(PKG_CONFIG) --libs libcurl openssl msgpack libmicrohttpd libnghttp2 hiredis 2>/dev/null || echo -lcurl -lssl -lcrypto -lmsgpackc -lmicrohttpd -lnghttp2 -lhiredis)
EV_CFLAGS  ?=
EV_LIBS    ?= -lev
# The HTTP/1.1 response parser of agent/h1c.c: llhttp (Node's parser) as
# Debian's node-llhttp ships it, C sources for embedding (no library, no .pc),
# compiled as they are, without our warning set.
LLHTTP_DIR    ?= /usr/share/llhttp
LLHTTP_CFLAGS ?= -I/usr/share/include/llhttp
LIBS       := $(DEP_LIBS) $(EV_LIBS) -lpthread -lm

ALL_CFLAGS := $(STD) $(WARN) $(CFLAGS) $(SAN_FLAGS) $(DEP_CFLAGS) $(EV_CFLAGS) $(LLHTTP_CFLAGS) -Iagent -MMD -MP
LLHTTP_SRCS := llhttp.c api.c http.c

AGENT_SRCS := $(filter-out agent/main.c,$(wildcard agent/*.c))
AGENT_OBJS := $(patsubst agent/%.c,$(BUILD)/agent/%.o,$(AGENT_SRCS)) \
              $(patsubst %.c,$(BUILD)/llhttp/%.o,$(LLHTTP_SRCS))
UNIT_SRCS  := $(wildcard tests/unit/test_*.c)
UNIT_BINS  := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRCS))
BIN        := $(BUILD)/spoa-auth

PREFIX  ?= /usr/local
SBINDIR ?= $(PREFIX)/sbin
SYSCONFDIR ?= /etc
UNITDIR ?= /lib/systemd/system
MANDIR  ?= $(PREFIX)/share/man
DOCDIR  ?= $(PREFIX)/share/doc/spoa-auth
INSTALL_BIN ?= $(BIN)

.PHONY: all deps build unit e2e test test-release asan tsan fuzz fuzz-run fuzz-smoke \
        run opts clean help alerts

all: build

deps:
	@sh scripts/install-deps

build: $(BIN)

$(BIN): $(BUILD)/agent/main.o $(BUILD)/libagent.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/libagent.a: $(AGENT_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/agent/%.o: agent/%.c $(BUILD)/.flags
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/llhttp/%.o: $(LLHTTP_DIR)/%.c $(BUILD)/.flags
	@mkdir -p $(dir $@)
	$(CC) $(STD) $(CFLAGS) $(SAN_FLAGS) $(LLHTTP_CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libagent.a $(BUILD)/.flags
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests/unit $(LDFLAGS) -o $@ $< $(BUILD)/libagent.a $(LIBS)

# Rebuild everything when the flags change: the stamp is rewritten while the
# Makefile is read, and only when its text differs, so `make -q` and `make -n`
# tell the truth (a FORCE rule would make every target look out of date).
# Under -n/-q the stamp is left alone; a changed one is then declared phony,
# so that its dependants still show as out of date.
# $(call flags_stamp,FILE,TEXT): "changed" when FILE does not hold TEXT.
# (MAKEFLAGS starts with the single-letter options, unless it starts with a long one.)
MAKE_LETTERS := $(filter-out -%,$(firstword $(MAKEFLAGS)))
DRY_RUN := $(findstring n,$(MAKE_LETTERS))$(findstring q,$(MAKE_LETTERS))
flags_stamp = $(shell echo '$(2)' | cmp -s - $(1) || { echo changed; [ -n '$(DRY_RUN)' ] || \
              { mkdir -p $(dir $(1)) && echo '$(2)' > $(1); }; })
# Goals that never build in $(BUILD) leave its stamp alone.
NO_BUILD_GOALS := clean help opts asan tsan fuzz fuzz-build fuzz-run fuzz-smoke $(FUZZ_BUILD)/%
ifneq ($(filter-out $(NO_BUILD_GOALS),$(or $(MAKECMDGOALS),all)),)
ifneq ($(call flags_stamp,$(BUILD)/.flags,$(CC) $(ALL_CFLAGS) $(LDFLAGS)),)
ifneq ($(DRY_RUN),)
.PHONY: $(BUILD)/.flags
endif
endif
endif
$(BUILD)/.flags: ;

unit: deps $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

# The suite runs with the default ports (make run's) held by dummy listeners,
# so that no test depends on them being free: HOLD_DEFAULT_PORTS=0 to skip.
HOLD_DEFAULT_PORTS ?= 1
e2e: deps $(BIN)
	SPOA_AUTH_TEST_HOLD_DEFAULT_PORTS=$(HOLD_DEFAULT_PORTS) SPOA_AUTH_BIN=$(abspath $(BIN)) \
	    $(PYTHON) -m pytest -q tests/e2e $(PYTEST_ARGS)

# The whole suite: release build, fuzz smoke, then the same tests under ASan/UBSan.
test: deps
	$(MAKE) --no-print-directory test-release
	$(MAKE) --no-print-directory alerts
	$(MAKE) --no-print-directory fuzz-smoke
	$(MAKE) --no-print-directory asan

test-release: unit e2e

asan:
	$(MAKE) --no-print-directory BUILD=build-asan SANITIZER=address,undefined CFLAGS='-O1 -g' unit e2e

# Alerting rules: syntax, then the expected alerts for the test series.
alerts: deps
	promtool check rules scripts/spoa-auth.rules.yml
	cd tests/alerts && promtool test rules spoa-auth.rules.test.yml

tsan:
	$(MAKE) --no-print-directory BUILD=build-tsan SANITIZER=thread CFLAGS='-O1 -g' unit

# The fuzz targets link one instrumented copy of the agent objects
# (build-fuzz/libagent.a, compiled once with FUZZ_CC), rebuilt like the others
# on header changes (.d files) and on a change of FUZZ_CC or its flags.
FUZZ_CC     ?= clang
FUZZ_SAN    := -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_CFLAGS := $(STD) -g -O1 $(FUZZ_SAN) -fsanitize=fuzzer-no-link -Iagent $(DEP_CFLAGS) $(EV_CFLAGS) \
               $(LLHTTP_CFLAGS) -MMD -MP
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(patsubst tests/fuzz/%.c,$(FUZZ_BUILD)/%,$(FUZZ_SRCS))
FUZZ_OBJS := $(patsubst agent/%.c,$(FUZZ_BUILD)/agent/%.o,$(AGENT_SRCS)) \
             $(patsubst %.c,$(FUZZ_BUILD)/llhttp/%.o,$(LLHTTP_SRCS))
FUZZ_SECONDS ?= 60

fuzz: deps fuzz-build

.PHONY: fuzz-build
fuzz-build: $(FUZZ_BINS)

ifneq ($(filter fuzz% $(FUZZ_BUILD)/%,$(MAKECMDGOALS)),)
ifneq ($(call flags_stamp,$(FUZZ_BUILD)/.flags,$(FUZZ_CC) $(FUZZ_CFLAGS) $(LIBS)),)
ifneq ($(DRY_RUN),)
.PHONY: $(FUZZ_BUILD)/.flags
endif
endif
endif
$(FUZZ_BUILD)/.flags: ;

$(FUZZ_BUILD)/agent/%.o: agent/%.c $(FUZZ_BUILD)/.flags
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c -o $@ $<

$(FUZZ_BUILD)/llhttp/%.o: $(LLHTTP_DIR)/%.c $(FUZZ_BUILD)/.flags
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c -o $@ $<

$(FUZZ_BUILD)/libagent.a: $(FUZZ_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(FUZZ_BUILD)/%: tests/fuzz/%.c $(FUZZ_BUILD)/libagent.a $(FUZZ_BUILD)/.flags
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Itests/fuzz -fsanitize=fuzzer -o $@ $< $(FUZZ_BUILD)/libagent.a $(LIBS)

fuzz-run: fuzz
	@set -e; for f in $(FUZZ_BINS); do n=$$(basename $$f); mkdir -p build-fuzz/corpus-$$n; \
	    dict=; [ -f tests/fuzz/$$n.dict ] && dict=-dict=tests/fuzz/$$n.dict; \
	    ./$$f -max_total_time=$(FUZZ_SECONDS) $$dict build-fuzz/corpus-$$n tests/fuzz/corpus/$$n; done

fuzz-smoke:
	$(MAKE) --no-print-directory fuzz-run FUZZ_SECONDS=15

run: deps $(BIN)
	@sh scripts/run-demo

.PHONY: fleet-demo
fleet-demo: deps $(BIN)
	@sh scripts/fleet-demo

# Benchmarks (not tests: nothing in make test runs them). Knobs: bench/run.
BENCH_TOOLS := $(BUILD)/bench/null-agent $(BUILD)/bench/spop-load
.PHONY: bench
bench: deps $(BIN) $(BENCH_TOOLS)
	@sh scripts/install-deps bench
	BENCH_TOOLS=$(abspath $(BUILD)/bench) SPOA_AUTH_BIN=$(abspath $(BIN)) $(PYTHON) bench/run

# Faults and soak (not tests either; a short subset is tests/e2e/test_chaos.py).
.PHONY: chaos soak soak-asan
chaos: deps $(BIN) $(BUILD)/bench/chaos-load
	CHAOS_LOAD=$(abspath $(BUILD)/bench/chaos-load) SPOA_AUTH_BIN=$(abspath $(BIN)) $(PYTHON) bench/chaos

soak: deps $(BIN) $(BUILD)/bench/chaos-load
	CHAOS_LOAD=$(abspath $(BUILD)/bench/chaos-load) SPOA_AUTH_BIN=$(abspath $(BIN)) $(PYTHON) bench/chaos soak

soak-asan: deps
	$(MAKE) --no-print-directory BUILD=build-asan SANITIZER=address,undefined CFLAGS='-O1 -g' build-asan/spoa-auth
	$(MAKE) --no-print-directory build/bench/chaos-load
	CHAOS_LOAD=$(abspath build/bench/chaos-load) SPOA_AUTH_BIN=$(abspath build-asan/spoa-auth) \
	    SOAK_SECONDS=$${SOAK_SECONDS:-120} SOAK_PLOT=0 SOAK_ASAN=1 SOAK_OUT=$(abspath build-asan/soak.json) $(PYTHON) bench/chaos soak

$(BUILD)/bench/chaos-load: bench/chaos-load.c $(BUILD)/.flags
	@mkdir -p $(dir $@)
	$(CC) $(STD) $(WARN) $(CFLAGS) -MMD -MP -o $@ $< -lm

$(BUILD)/bench/%: bench/%.c $(BUILD)/.flags
	@mkdir -p $(dir $@)
	$(CC) $(STD) $(WARN) $(CFLAGS) -MMD -MP -o $@ $< -lpthread

opts:
	@echo 'CC=$(CC)'; echo 'CFLAGS=$(ALL_CFLAGS)'; echo 'LIBS=$(LIBS)'

clean:
	rm -rf build build-asan build-tsan build-fuzz

help:
	@sed -n '1,/^$$/p' Makefile

# Installation (docs/operations.md). The config file is never overwritten; the
# unit's /usr/sbin and /etc paths are rewritten to SBINDIR and SYSCONFDIR.
# INSTALL_BIN: the binary to install (default: the one built here).
DOC_FILES := docs/operations.md scripts/spoa-auth.rules.yml $(wildcard haproxy/haproxy.cfg haproxy/spoe-auth.conf haproxy/scopes.map)

.PHONY: install uninstall deb verify-unit

install: $(INSTALL_BIN)
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(SYSCONFDIR)/spoa-auth $(DESTDIR)$(UNITDIR) \
	    $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(DOCDIR)
	install -m 0755 $(INSTALL_BIN) $(DESTDIR)$(SBINDIR)/spoa-auth
	@c=$(DESTDIR)$(SYSCONFDIR)/spoa-auth/spoa-auth.conf; if [ -e $$c ]; then \
	    echo "install: keeping $$c"; else install -m 0644 scripts/spoa-auth.conf $$c; fi
	sed -e 's|/usr/sbin/spoa-auth|$(SBINDIR)/spoa-auth|g' -e 's|/etc/spoa-auth/|$(SYSCONFDIR)/spoa-auth/|g' \
	    scripts/spoa-auth.service > $(DESTDIR)$(UNITDIR)/spoa-auth.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/spoa-auth.service
	install -m 0644 docs/spoa-auth.8 $(DESTDIR)$(MANDIR)/man8/spoa-auth.8
	install -m 0644 $(DOC_FILES) $(DESTDIR)$(DOCDIR)/

# Leaves the config file if it was changed from the shipped default.
uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/spoa-auth $(DESTDIR)$(UNITDIR)/spoa-auth.service \
	    $(DESTDIR)$(MANDIR)/man8/spoa-auth.8 $(addprefix $(DESTDIR)$(DOCDIR)/,$(notdir $(DOC_FILES)))
	rmdir $(DESTDIR)$(DOCDIR) 2>/dev/null || true
	@c=$(DESTDIR)$(SYSCONFDIR)/spoa-auth/spoa-auth.conf; if cmp -s scripts/spoa-auth.conf $$c; then \
	    rm -f $$c; rmdir $(DESTDIR)$(SYSCONFDIR)/spoa-auth 2>/dev/null || true; \
	    elif [ -e $$c ]; then echo "uninstall: keeping modified $$c"; fi

deb: deps $(BIN)
	sh scripts/build-deb $(BIN)

# systemd-analyze verify on a copy of the unit whose ExecStart exists, with the
# man page on MANPATH; then the exposure score (fails above UNIT_EXPOSURE/10).
VERIFY_EXEC ?= /bin/true
UNIT_EXPOSURE ?= 20
verify-unit:
	@rm -rf $(BUILD)/verify-unit && mkdir -p $(BUILD)/verify-unit/man/man8
	sed 's|/usr/sbin/spoa-auth|$(VERIFY_EXEC)|g' scripts/spoa-auth.service > $(BUILD)/verify-unit/spoa-auth.service
	cp docs/spoa-auth.8 $(BUILD)/verify-unit/man/man8/
	MANPATH=$(abspath $(BUILD)/verify-unit/man) systemd-analyze verify $(BUILD)/verify-unit/spoa-auth.service
	@systemd-analyze security --offline=true --threshold=$(UNIT_EXPOSURE) --no-pager \
	    $(BUILD)/verify-unit/spoa-auth.service > $(BUILD)/verify-unit/security.txt; \
	    rc=$$?; tail -n 1 $(BUILD)/verify-unit/security.txt; exit $$rc

-include $(AGENT_OBJS:.o=.d) $(BUILD)/agent/main.d $(UNIT_BINS:=.d) \
         $(FUZZ_OBJS:.o=.d) $(FUZZ_BINS:=.d) $(wildcard $(BUILD)/bench/*.d)
