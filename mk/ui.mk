# Debian's Chromium for the UI acceptance test (tests/ui): the distribution's package, no downloaded
# browser. Idempotent: does nothing when /usr/bin/chromium is there. Included by the Makefile; wire it
# in as a prerequisite of `test` (the test fails under CI=true without it and is skipped elsewhere).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: chromium
chromium: $(CHROMIUM)
$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
