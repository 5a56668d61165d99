# Debian's Chromium for the UI acceptance test (tests/ui), with a CJK font: the distribution's packages, no
# downloaded browser. Without fonts-noto-cjk every Chinese character of a screenshot is a box (the DOM-only
# checks pass regardless), so the font is part of the target. Idempotent: each package is installed only
# when its file is missing. Included by the Makefile and a prerequisite of `test` (the test fails under
# CI=true without Chromium and is skipped elsewhere).
CHROMIUM := /usr/bin/chromium
CJK_FONT := /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends

.PHONY: chromium
chromium: $(CHROMIUM) $(CJK_FONT)
$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(APT_INSTALL) chromium
$(CJK_FONT):
	$(SUDO) apt-get update -qq
	$(APT_INSTALL) fonts-noto-cjk
