"""Deterministic generator of a partner's canonical item catalogue, with a few deliberate defects.

``generate_catalogue(registry, partner)`` depends only on ``registry.seed``, the partner's division
code and size, and which other partners share its province: the same registry gives the same
records in any process. Items are grouped by 基本编码: each group is one catalogue entry implemented
at one or more levels (2 省, 3 市, 4 区县, 5 乡镇) whose ten 五级N同 elements are identical, except
where a ``five_level_diff`` defect says otherwise. ``defects(registry, partner)`` lists the broken
records by 实施编码.

The ten elements of a 基本编码 come from the province's catalogue, so every partner of a province that
implements it carries the same ones (the content is drawn from the seed, the province and the code,
not from the partner). The exception is a deliberate quirk: in each province, ``QUIRKS_PER_PROVINCE``
基本编码 held by three partners or more have one partner whose local edit of one element (a shorter
promised limit, a material accepted in another form, an extra local acceptance condition) departs
from the province's version at all of that partner's levels. Inside that partner everything agrees;
only a comparison across the partners of the province finds it. ``province_quirks(registry)`` lists
them; the partners agreeing with the province outnumber the quirky one at the most senior level.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import random
import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from tongban.codes import USCC_ALPHABET, make_task_code, make_uscc
from tongban.config import CHINA_TZ
from tongban.model import Item, Material
from tongban.registry import Partner, Registry, divisions
from tongban.simulators import content
from tongban.simulators.content import LAWS, Template

DEFECT_KINDS: tuple[str, ...] = (
    "bad_uscc_check",  # last USCC character wrong (dept_uscc and task_code agree on the wrong one)
    "empty_legal_basis",  # 设定依据 empty
    "promised_over_legal",  # 承诺时限 longer than 法定时限 (same unit)
    "level_mismatch",  # level digit inside task_code differs from the level field
    "five_level_diff",  # one element differs from the other implementations of its 基本编码
    "unmappable_code",  # item_type has no code in any wire format: the wire carries "ZZ"
)
UNMAPPABLE_ITEM_TYPE = "ZZ"
QUIRKS_PER_PROVINCE = 2  # 基本编码 per province where one partner's local edit departs from the province's
QUIRK_ELEMENTS: tuple[str, ...] = ("time_limit", "materials", "accept_conditions")  # tried in turn
LOCAL_CONDITION = "申请人须先通过本市“跨省通办”专窗预约"  # what the accept_conditions quirk adds
DEFECT_RATE = 0.015  # share of a partner's records that get a defect (at least 2 per partner)
_AVERAGE_GROUP = 2.2  # implementations per 基本编码 the generator aims at
_MAX_VARIANTS = 900  # extra 子项 per template at most (the 子项 number has three digits)
_STREETS_PER_DISTRICT = 2
_TOWNS_PER_CITY = 6  # for cities without a county level (东莞, 中山)
_DIGITS = "零一二三四五六七八九"


def reference_time(seed: int) -> datetime:
    """The fixed "now" of a seed: the seed read as YYYYMMDD at midnight China time, else a day derived
    from it. Generated items are updated before it; admin changes on the simulator land after it.
    """
    try:
        day = datetime.strptime(str(seed), "%Y%m%d")
    except ValueError:
        day = datetime(2023, 1, 1) + timedelta(days=seed % 3650)
    return day.replace(tzinfo=CHINA_TZ)


def generate_catalogue(registry: Registry, partner: Partner) -> list[dict[str, Any]]:
    """The partner's catalogue: ``partner.items`` canonical records (``Item.record()``), by task_code."""
    return [_copied(r) for r in _build(registry, partner)[0]]


def _copied(record: dict[str, Any]) -> dict[str, Any]:
    """A copy sharing nothing mutable with ``record`` (lists of scalars or of flat dicts, as items hold):
    ``copy.deepcopy`` does the same at several times the cost, which counts at national scale."""
    return {
        k: [dict(v) if isinstance(v, dict) else v for v in value] if isinstance(value, list) else value
        for k, value in record.items()
    }


def defects(registry: Registry, partner: Partner) -> dict[str, str]:
    """The deliberately broken records of the partner's catalogue: task_code -> kind (DEFECT_KINDS)."""
    return dict(_build(registry, partner)[1])


SHARED_GENERATION_ITEMS = 50_000  # below this many items in all, worker processes cost more than they save


def generate_catalogues(
    registry: Registry, processes: int = 1
) -> dict[str, tuple[list[dict[str, Any]], dict[str, str]]]:
    """Every partner's catalogue and defects (``generate_catalogue``, ``defects``), by division.

    With ``processes`` > 1 and at least ``SHARED_GENERATION_ITEMS`` items in all, the partners are shared
    among that many forked worker processes (in division order, so that partners of one province, whose
    quirks are chosen together, mostly land in the same one); nothing stays cached in this process.
    """
    partners = registry.partners
    if processes <= 1 or sum(p.items for p in partners) < SHARED_GENERATION_ITEMS:
        return {p.division: (generate_catalogue(registry, p), defects(registry, p)) for p in partners}
    chunk = max(1, min(4, len(partners) // processes))
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
        built = pool.map(_generated, [registry] * len(partners), partners, chunksize=chunk)
        return {p.division: result for p, result in zip(partners, built, strict=True)}


def _generated(registry: Registry, partner: Partner) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """One partner's build in a worker process, past the cache (the parent receives its own copy)."""
    peers = _peers(registry, partner.province)
    records, broken = _build_cached.__wrapped__(registry.seed, partner, peers, registry.home.get("name", ""))
    return list(records), broken


@dataclass(frozen=True)
class Quirk:
    """One partner's local edit of one element of a 基本编码 that other partners of its province hold too."""

    partner: str  # the division whose items depart from the province's version
    catalog_code: str
    element: str  # a key of tongban.model.ELEMENTS
    holders: tuple[str, ...]  # every partner of the province implementing the 基本编码, the quirky one included


def province_quirks(registry: Registry) -> list[Quirk]:
    """The deliberate cross-partner disagreements of the registry's catalogues, province by province."""
    provinces = sorted({p.province for p in registry.partners})
    home = registry.home.get("name", "")
    return [q for province in provinces for q in _quirks(registry.seed, _peers(registry, province), home)]


def _peers(registry: Registry, province: str) -> tuple[Partner, ...]:
    return tuple(sorted((p for p in registry.partners if p.province == province), key=lambda p: p.division))


def _build(registry: Registry, partner: Partner) -> tuple[tuple[dict[str, Any], ...], dict[str, str]]:
    peers = _peers(registry, partner.province)
    return _build_cached(registry.seed, partner, peers, registry.home.get("name", ""))


@lru_cache(maxsize=64)
def _build_cached(
    seed: int, partner: Partner, province_peers: tuple[Partner, ...], home_name: str
) -> tuple[tuple[dict[str, Any], ...], dict[str, str]]:
    generator = _Generator(seed, partner, tuple(p.division for p in province_peers), home_name)
    records, broken = generator.run(_quirks(seed, province_peers, home_name))
    return tuple(records), broken


@lru_cache(maxsize=16)
def _quirks(seed: int, province_peers: tuple[Partner, ...], home_name: str) -> tuple[Quirk, ...]:
    """Choose the province's quirks from which partner implements which 基本编码 at which levels.

    A quirky partner must be outvoted at the most senior level the 基本编码 is implemented at: it sits
    below that level, or at least two other partners sit there with it. Deterministic in the seed.
    """
    divisions = tuple(p.division for p in province_peers)
    holders: dict[str, dict[str, str]] = {}  # catalog code -> division -> its most senior level
    groups: dict[str, tuple[_Generator, _Group]] = {}
    for peer in province_peers:
        generator = _Generator(seed, peer, divisions, home_name)
        for group in generator._groups():
            levels = [place.level for place in group.candidates[: group.size]]
            holders.setdefault(group.catalog_code, {})[peer.division] = min(levels)
            groups.setdefault(group.catalog_code, (generator, group))
    candidates: list[tuple[str, list[str]]] = []
    for code, held in holders.items():
        if len(held) < 3:
            continue
        senior = min(held.values())
        at_senior = [d for d, level in held.items() if level == senior]
        eligible = sorted(d for d, level in held.items() if level != senior or len(at_senior) >= 3)
        if eligible:
            candidates.append((code, eligible))
    province = province_peers[0].province if province_peers else ""
    candidates.sort(key=lambda c: _digest(f"{seed}|{province}|quirk|{c[0]}"))
    quirks: list[Quirk] = []
    for code, eligible in candidates:
        if len(quirks) == QUIRKS_PER_PROVINCE:
            break
        generator, group = groups[code]
        shared = generator._shared(group)
        turn = len(quirks) + _digest(f"{seed}|{province}|quirk elements") % len(QUIRK_ELEMENTS)
        elements = [QUIRK_ELEMENTS[(turn + k) % len(QUIRK_ELEMENTS)] for k in range(len(QUIRK_ELEMENTS))]
        element = next((e for e in elements if _quirk(shared, e) is not None), None)
        if element is not None:
            partner = eligible[_digest(f"{seed}|{code}|quirky") % len(eligible)]
            quirks.append(Quirk(partner, code, element, tuple(sorted(holders[code]))))
    return tuple(quirks)


def _quirk(shared: dict[str, Any], element: str) -> dict[str, Any] | None:
    """The shared content of a 基本编码 with one partner's local edit of ``element``; None when that edit
    does not apply to it (it would break another rule)."""
    edited = _copied(shared)
    if element == "time_limit":  # the city promises one day less than the province
        if edited["promised_limit"] <= 1:
            return None
        edited["promised_limit"] -= 1
    elif element == "materials":  # the city takes the first material in another form
        first = edited["materials"][0]
        electronic = first["form"] != "electronic"
        first.update(form="electronic" if electronic else "paper", copies=None if electronic else 1)
    elif element == "accept_conditions":  # the city adds a local condition
        conditions = _numbered([*_clauses(edited["accept_conditions"]), LOCAL_CONDITION])
        if len(conditions) > 300:
            return None
        edited["accept_conditions"] = conditions
    else:  # pragma: no cover - QUIRK_ELEMENTS is closed
        raise ValueError(element)
    return edited


# --- places and departments -------------------------------------------------------------------


@dataclass(frozen=True)
class Place:
    """Where an implementing department sits: a level plus, below the city, a district and town."""

    level: str
    district: str | None = None
    town: str | None = None

    def fields(self, province: str, city: str) -> dict[str, str]:
        district = self.district or ""
        branch = district if district.endswith("区") else district[:-1]
        county = city + district if district.endswith("区") else (district or city)
        police_county = f"{city}公安局{district}分局" if district.endswith("区") else f"{district}公安局"
        town = self.town or ""
        stem = town.removesuffix("街道").removesuffix("镇")
        town_office = f"{county}{town}办事处" if town.endswith("街道") else f"{county}{town}人民政府"
        if self.district:
            police_town = f"{police_county}{stem}派出所"
            market_town = f"{county}市场监督管理局{stem}市场监督管理所"
        else:  # a city whose towns sit directly under it
            police_town = f"{city}公安局{stem}分局"
            market_town = f"{city}市场监督管理局{stem}分局"
        return {
            "province": province,
            "city": city,
            "district": district,
            "branch": branch,
            "county": county,
            "police_county": police_county,
            "town_office": town_office,
            "police_town": police_town,
            "market_town": market_town,
        }


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _cn_number(n: int) -> str:
    """Chinese numerals for article numbers (1-9999): 19 -> 十九, 209 -> 二百零九, 1049 -> 一千零四十九."""
    if n < 10:
        return _DIGITS[n]
    if n < 20:
        return "十" + (_DIGITS[n % 10] if n % 10 else "")
    parts: list[str] = []
    gap = False
    for value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        digit = n // value % 10
        if digit:
            if gap and parts:
                parts.append("零")
            parts.append(_DIGITS[digit] + unit)
            gap = False
        else:
            gap = True
    return "".join(parts)


def _citation(key: str, article: int | None, clause: str) -> str:
    law = LAWS[key]
    doc = content.LAW_DOC_NUMBERS.get(key)
    title = f"《{law.title}》" + (f"（{doc}）" if doc else "")
    where = f"第{_cn_number(article)}条" if article is not None else ""
    return f"{title}{where}：“{clause}”"


# --- the generator ----------------------------------------------------------------------------


@dataclass
class _Group:
    template: Template
    name: str
    catalog_code: str
    candidates: list[Place]
    size: int = 1


class _Generator:
    def __init__(self, seed: int, partner: Partner, province_peers: tuple[str, ...], home_name: str) -> None:
        self.seed = seed
        self.partner = partner
        self.province_peers = province_peers
        self.home_name = home_name or "本地"
        self.rng = random.Random(seed ^ int(partner.division))
        known = divisions()
        self.city = known["divisions"].get(partner.division, partner.name)
        self.province = known["provinces"].get(partner.province, "")
        self.portal = content.PORTALS.get(partner.division[:2], f"{self.province}政务服务网")
        self.reference = reference_time(seed)
        self.usccs: dict[tuple[str, str], str] = {}

    def run(self, quirks: Sequence[Quirk] = ()) -> tuple[list[dict[str, Any]], dict[str, str]]:
        groups = self._groups()
        mine = {q.catalog_code: q.element for q in quirks if q.partner == self.partner.division}
        quirky = {q.catalog_code for q in quirks}  # no defect there: the province's majority stays clear
        records: list[dict[str, Any]] = []
        members: list[list[int]] = []
        for group in groups:
            shared = self._shared(group)
            if group.catalog_code in mine:
                shared = _quirk(shared, mine[group.catalog_code]) or shared
            members.append([])
            for place in group.candidates[: group.size]:
                members[-1].append(len(records))
                records.append(self._implementation(group, place, shared))
        blocked = {g for g, group in enumerate(groups) if group.catalog_code in quirky}
        broken = self._inject_defects(records, members, blocked)
        checked = [Item(**r).record() for r in records]
        checked.sort(key=lambda r: r["task_code"])
        codes = [r["task_code"] for r in checked]
        if len(set(codes)) != len(codes):
            raise RuntimeError(f"duplicate task codes generated for partner {self.partner.division}")
        return checked, dict(sorted(broken.items()))

    # -- groups: which 基本编码 and at which places --

    def _places(self) -> tuple[list[Place], list[Place]]:
        """The partner's county-level and township-level places."""
        division = self.partner.division
        if division in content.TOWNS:
            towns = self.rng.sample(content.TOWNS[division], _TOWNS_PER_CITY)
            return [], [Place("5", None, t) for t in towns]
        districts = content.DISTRICTS.get(division, content.FALLBACK_DISTRICTS)
        towns = [Place("5", d, t) for d in districts for t in self.rng.sample(content.STREETS, _STREETS_PER_DISTRICT)]
        return [Place("4", d) for d in districts], towns

    def _owns_province_item(self, catalog_code: str) -> bool:
        """Whether this partner lists the provincial implementation of a 基本编码.

        A provincial department is shared by all partners of a province; giving each provincial
        implementation to one of them keeps task codes unique across the registry.
        """
        peers = self.province_peers
        owner = peers[_digest(f"{self.seed}|{self.partner.province}|{catalog_code}") % len(peers)]
        return owner == self.partner.division

    def _groups(self) -> list[_Group]:
        counties, towns = self._places()
        total = self.partner.items
        pool: list[_Group] = []
        for variant in range(_MAX_VARIANTS + 1):  # variants only for catalogues beyond the real templates
            if variant and len(pool) >= total / _AVERAGE_GROUP and sum(len(g.candidates) for g in pool) >= total:
                break
            for template in content.TEMPLATES:
                source = self.partner.division[:2] if template.local else "00"
                for index, name in self._sub_items(template, variant):
                    code = f"{source}{template.item_type}{template.main}{index:03d}"
                    places = self._candidates(template, code, counties, towns)
                    if places:
                        pool.append(_Group(template, name, code, places))
        self.rng.shuffle(pool)
        count = min(len(pool), max(1, round(total / _AVERAGE_GROUP)))
        while count < len(pool) and sum(len(g.candidates) for g in pool[:count]) < total:
            count += 1
        chosen = pool[:count] if total else []
        if sum(len(g.candidates) for g in chosen) < total:
            raise ValueError(f"partner {self.partner.division}: {total} items exceed what the simulator can generate")
        open_groups = [g for g in chosen if g.size < len(g.candidates)]
        for _ in range(total - len(chosen)):
            at = self.rng.choice(range(len(open_groups)))  # the draw rng.choice(open_groups) would make
            open_groups[at].size += 1
            if open_groups[at].size == len(open_groups[at].candidates):
                del open_groups[at]  # order kept: the same draws pick the same groups
        return chosen

    @staticmethod
    def _sub_items(template: Template, variant: int) -> list[tuple[int, str]]:
        """(子项 number, name) of a template's 基本编码. Variant 0 is the template as written; variant
        n >= 1 adds one more 子项 (情形 n) per template, for national-scale simulations whose
        partners list more items than the real templates give (``bench/bench_national.py``)."""
        if variant == 0:
            return list(enumerate(template.subs, start=1)) if template.subs else [(0, template.name)]
        return [(len(template.subs) + variant, f"{template.name}（第{_cn_number(variant)}类情形）")]

    def _candidates(
        self, template: Template, catalog_code: str, counties: list[Place], towns: list[Place]
    ) -> list[Place]:
        levels = set(template.levels) & set(content.DEPARTMENTS[template.domain][1])
        places: list[Place] = []
        if "2" in levels and self._owns_province_item(catalog_code):
            places.append(Place("2"))
        if "3" in levels:
            places.append(Place("3"))
        if "4" in levels:
            places.extend(counties)
        if "5" in levels:
            places.extend(towns)
        if not places:
            return []
        primary = next((p for p in places if p.level == "3"), None) or self.rng.choice(places)
        rest = [p for p in places if p != primary]
        self.rng.shuffle(rest)
        return [primary, *rest]

    # -- content shared by all implementations of one 基本编码 --

    def _shared(self, group: _Group) -> dict[str, Any]:
        """The ten elements (and mode) of a 基本编码 as the province's catalogue has them: drawn from the
        seed, the province and the code only, so every partner of the province gets the same."""
        t = group.template
        rng = random.Random(_digest(f"{self.seed}|{self.partner.province}|{group.catalog_code}"))
        legal_limit, legal_unit, promised, promised_unit = self._limits(t, rng)
        mode = rng.choice(t.modes)
        handle_type: str | None = "1" if t.instant else "2"
        if rng.random() < 0.03:
            handle_type = None
        return {
            "catalog_code": group.catalog_code,
            "name": group.name,
            "legal_basis": self._legal_basis(t, rng),
            "item_type": t.item_type,
            "accept_conditions": self._conditions(t, rng),
            "service_objects": t.objects.split(","),
            "procedure": self._procedure(mode, rng),
            "materials": self._materials(t, rng),
            "legal_limit": legal_limit,
            "legal_limit_unit": legal_unit,
            "promised_limit": promised,
            "promised_limit_unit": promised_unit,
            "result": t.result,
            "handling_mode": mode,
            "handle_type": handle_type,
        }

    def _legal_basis(self, t: Template, rng: random.Random) -> str:
        chosen: list[tuple[str, int | None, str]] = []
        spare: list[tuple[str, int | None, str]] = []
        for ref in t.laws:
            key, _, numbers = ref.partition(":")
            articles = list(LAWS[key].articles)
            if numbers:
                wanted = {int(n) for n in numbers.split(",")}
                articles = [a for a in articles if a[0] in wanted]
            if not articles:
                raise ValueError(f"{t.name}: law reference {ref!r} cites no known article")
            keep = sorted(rng.sample(range(len(articles)), rng.randint(1, min(2, len(articles)))))
            chosen += [(key, *articles[i]) for i in keep]
            spare += [(key, *a) for i, a in enumerate(articles) if i not in keep]
        policies = [(key, *a) for key in t.extra_laws for a in LAWS[key].articles]
        if rng.random() < 0.5:
            chosen += policies
        else:
            spare += policies

        def text(citations: Sequence[tuple[str, int | None, str]]) -> str:
            return "；".join(_citation(*c) for c in citations)

        while len(text(chosen)) < 100 and spare:
            chosen.append(spare.pop(0))
        while len(text(chosen)) > 400 and len(chosen) > 1:
            chosen.pop()
        return text(chosen)

    def _conditions(self, t: Template, rng: random.Random) -> str:
        clauses = [t.condition]
        common = list(content.COMMON_CONDITIONS)
        rng.shuffle(common)
        for clause in common:
            candidate = [*clauses, clause]
            if len(_numbered(candidate)) > 300:
                break
            clauses = candidate
            if len(_numbered(clauses)) >= 100 and rng.random() < 0.4:
                break
        return _numbered(clauses)

    def _procedure(self, mode: str, rng: random.Random) -> str:
        steps = {
            "1": (
                f"申请：申请人登录{self.portal}“跨省通办”服务专区，在线填写申请信息并上传申请材料",
                "受理：实施机关在1个工作日内对申请材料进行预审，材料齐全、符合法定形式的予以受理，不予受理的一次性告知理由",
                "审查：实施机关对申请材料进行审查，必要时进行核查",
                "决定：作出准予办理或者不予办理的决定",
                "送达：通过电子证照、短信或者邮寄方式送达办理结果",
            ),
            "2": (
                f"申请：申请人向{self.home_name}政务服务中心“跨省通办”窗口或者办理地窗口提交申请材料",
                "收件：收件地窗口核验申请人身份和材料原件，出具收件凭证",
                "转递：收件地通过一体化平台推送电子材料，并将纸质材料邮寄至办理地",
                "受理审查：办理地实施机关受理并审查申请材料",
                "办结：办理结果通过邮寄送达申请人或者由收件地窗口发放",
            ),
            "3": (
                "申请：申请人在办理地或者户籍（居住）地任一“跨省通办”窗口提出申请",
                "协同：两地窗口通过一体化平台共享申请信息和材料，申请人无需往返两地",
                "审核：两地实施机关分别完成各自环节的审核，办理地出具意见后推送另一地",
                "办结：两地同步完成业务办理，结果由申请地窗口告知并发放",
            ),
        }[mode]
        text = _numbered(list(steps))
        if rng.random() < 0.5:
            text += f"办理进度可通过{self.portal}查询。"
        return text

    def _materials(self, t: Template, rng: random.Random) -> list[dict[str, Any]]:
        names = list(t.materials)
        count = rng.randint(1, min(6, len(names)))
        picked = [names[0], *[names[i] for i in sorted(rng.sample(range(1, len(names)), count - 1))]]
        materials = []
        for position, name in enumerate(picked):
            form = rng.choice(("paper", "electronic", "both"))
            materials.append(
                Material(
                    name=name,
                    required=position == 0 or rng.random() < 0.75,
                    form=form,
                    copies=None if form == "electronic" else rng.choice((1, 1, 1, 2)),
                    source=_material_source(name),
                ).model_dump()
            )
        return materials

    def _limits(self, t: Template, rng: random.Random) -> tuple[int | None, str | None, int, str]:
        if t.legal is None:
            return None, None, 1 if t.instant else rng.choice((3, 5, 7, 10)), "WD"
        days, unit = t.legal
        promised = 1 if t.instant else max(1, round(days * rng.choice((0.2, 0.3, 0.5, 0.6))))
        return days, unit, promised, unit

    # -- one implementation --

    def _implementation(self, group: _Group, place: Place, shared: dict[str, Any]) -> dict[str, Any]:
        category, names = content.DEPARTMENTS[group.template.domain]
        dept_name = names[place.level].format(**place.fields(self.province, self.city))
        division = self.partner.province if place.level == "2" else self.partner.division
        uscc = self._uscc(division, category, dept_name)
        updated = self.reference - timedelta(
            days=self.rng.randint(1, 540), seconds=self.rng.randint(8 * 3600, 18 * 3600)
        )
        return {
            "partner": self.partner.division,
            "task_code": make_task_code(uscc, place.level, group.catalog_code),
            **_copied(shared),
            "level": place.level,
            "dept_name": dept_name,
            "dept_uscc": uscc,
            "version": str(self.rng.randint(1, 5)),
            "updated_at": updated,
        }

    def _uscc(self, division: str, category: str, dept_name: str) -> str:
        """A valid USCC of a government body: ``1`` + category + division + hashed 组织机构代码 body."""
        key = (division, dept_name)
        if key not in self.usccs:
            taken = set(self.usccs.values())
            salt = 0
            while True:
                body = f"{_digest(f'{self.seed}|{division}|{dept_name}|{salt}') % 10**8:08d}"
                uscc = make_uscc("1", category, division, body)
                if uscc not in taken:
                    break
                salt += 1
            self.usccs[key] = uscc
        return self.usccs[key]

    # -- defects --

    def _inject_defects(
        self, records: list[dict[str, Any]], members: list[list[int]], blocked: set[int]
    ) -> dict[str, str]:
        rng = self.rng
        total = len(records)
        if total == 0:
            return {}
        wanted = max(2, round(total * DEFECT_RATE))
        offset = rng.randrange(len(DEFECT_KINDS))
        used_groups: set[int] = set(blocked)
        broken: dict[int, str] = {}
        group_of = {i: g for g, idx in enumerate(members) for i in idx}
        fitting = {k: [i for i in range(total) if _fits(k, i, records, members, group_of)] for k in DEFECT_KINDS}
        for n in range(wanted):
            kind = DEFECT_KINDS[(offset + n) % len(DEFECT_KINDS)]
            candidates = [i for i in fitting[kind] if group_of[i] not in used_groups]
            if not candidates:
                continue
            index = rng.choice(candidates)
            used_groups.add(group_of[index])
            broken[index] = kind
            self._break(kind, records[index])
        codes = {records[i]["task_code"] for i in range(total)}
        if len(codes) != total:
            raise RuntimeError(f"defect injection produced duplicate task codes for {self.partner.division}")
        return {records[i]["task_code"]: kind for i, kind in broken.items()}

    def _break(self, kind: str, record: dict[str, Any]) -> None:
        rng = self.rng
        if kind == "bad_uscc_check":
            good = record["dept_uscc"]
            wrong = USCC_ALPHABET[(USCC_ALPHABET.index(good[17]) + rng.randint(1, 30)) % len(USCC_ALPHABET)]
            record["dept_uscc"] = good[:17] + wrong
            record["task_code"] = make_task_code(record["dept_uscc"], record["level"], record["catalog_code"])
        elif kind == "empty_legal_basis":
            record["legal_basis"] = ""
        elif kind == "promised_over_legal":
            record["promised_limit"] = record["legal_limit"] + rng.randint(1, 10)
            record["promised_limit_unit"] = record["legal_limit_unit"]
        elif kind == "level_mismatch":
            digit = "4" if record["level"] != "4" else "3"
            record["task_code"] = make_task_code(record["dept_uscc"], digit, record["catalog_code"])
        elif kind == "five_level_diff":
            changes = ["accept_conditions", "materials", "result"]
            if record["promised_limit"] > 1:
                changes.append("promised_limit")
            change = rng.choice(changes)
            if change == "accept_conditions":
                conditions = record["accept_conditions"].removesuffix("。")
                record["accept_conditions"] = conditions + "；本级另需提交单位证明。"
            elif change == "materials":
                record["materials"].append(
                    Material(
                        name="其他补充材料", required=False, form="paper", copies=1, source="申请人自备"
                    ).model_dump()
                )
            elif change == "result":
                record["result"] += "（加盖本级印章）"
            else:
                record["promised_limit"] -= 1
        elif kind == "unmappable_code":
            record["item_type"] = UNMAPPABLE_ITEM_TYPE
        else:  # pragma: no cover - DEFECT_KINDS is closed
            raise ValueError(kind)


def _fits(
    kind: str, index: int, records: list[dict[str, Any]], members: list[list[int]], group_of: dict[int, int]
) -> bool:
    """Whether a record can carry a defect of this kind without breaking anything else.

    Element defects go to single-implementation groups (so they do not also show as 五级N同 gaps);
    ``five_level_diff`` goes to a non-first member of a group of three or more that is below the
    group's most senior level, so the odd one out is clear (a defect on the senior row would make it
    the reference, and the province's version the odd one out in every other partner).
    """
    group = members[group_of[index]]
    record = records[index]
    if kind in ("empty_legal_basis", "unmappable_code"):
        return len(group) == 1
    if kind == "promised_over_legal":
        return len(group) == 1 and record["legal_limit"] is not None
    if kind == "five_level_diff":
        senior = min(records[i]["level"] for i in group)
        return len(group) >= 3 and group[0] != index and record["level"] != senior
    return True


def _numbered(parts: list[str]) -> str:
    return "；".join(f"{i}.{p}" for i, p in enumerate(parts, start=1)) + "。"


def _clauses(numbered: str) -> list[str]:
    """The clauses of a :func:`_numbered` text."""
    return [re.sub(r"^\d+\.", "", part) for part in re.split(r"；(?=\d+\.)", numbered.removesuffix("。"))]


def _material_source(name: str) -> str:
    if any(k in name for k in ("申请", "表", "承诺", "声明", "委托书", "照片", "名单", "方案", "说明")):
        return "申请人自备"
    if any(k in name for k in ("身份证", "户口簿", "执照", "证书", "驾驶证", "行驶证", "结婚证", "凭证", "证明")):
        return "政府部门核发"
    if "报告" in name:
        return "中介机构或法定机构产生"
    return "申请人自备"
