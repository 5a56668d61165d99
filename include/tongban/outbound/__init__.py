"""The outbound direction of 跨省通办: 沅江's own items offered to every partner region.

The provincial platform holds 沅江's local item library with each item's 跨省通办 configuration
(offered or not, handling modes, partner regions); the nightly run reads it, validates it with the
same GX suites and 五级N同 rules as partner items (home province 430000), and brings each partner's
configured list in line with what we offer it, in that partner's own wire style (idempotent batches,
per-item acknowledgement, read-back). Modules: :mod:`.wire` (the offer wire format, shared with the
partner simulator), :mod:`.library` (reading and checking the library), :mod:`.diff` (what a partner
has configured against what we offer), :mod:`.client` (the partner's offer endpoint), :mod:`.stages`
(the pipeline stages), :mod:`.report` (the internal report and each partner's report section).
"""
