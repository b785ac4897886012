"""Deterministic synthetic Chinese extractive-QA data (SQuAD format) for the offline demo.

Contexts are short "encyclopedia" paragraphs about made-up people, companies and places.
Every question names one entity and one relation; the same relation is stated for other
entities in the same paragraph (distractors), so the model has to match the entity name.
Dev uses entity names that never occur in train, built from the same character pools.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

VERSION = "demo-1"

# Character pools. Duplicated characters are harmless: the train/dev split rule (is_dev_name)
# looks only at the final name string.
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程苏魏吕丁沈任姚卢姜崔钟谭陆汪范金石廖贾夏韦傅方白邹孟熊秦邱江尹薛闫段雷侯龙史黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
GIVEN = "伟芳敏静丽强磊军洋勇艳杰涛明超秀霞平刚英华玉萍红玲兰凤洁梅琳云莲雪荣瑞凡佳嘉琼勤珍莉璐琦晶妍秋珊锦青倩婷颖露瑶怡蓓丹蓉君琴蕊薇梦岚馨韵悦昭冰羽宁欣柔竹晓枫芸菲亚可舒思哲浩宇轩辰博文睿航鹏翔"
BRAND = "云帆星辰海川泽光启明远智达华恒信诚瑞新天宏鼎盛锐峰联创安康泰和嘉乐优品速驰微芯数源蓝图极致领航众合长青飞鸿万象"
PLACE = "临江平阳青川白石清河安溪南屏东湖龙泉凤岭桃源梅岗松林柳营金沙玉山碧水丹霞银湾云台石门丰乐永宁长汀望海枫桥鹤鸣"
SYLLABLES = ["li", "wang", "xiao", "ming", "hua", "chen", "lin", "yu", "feng", "jie", "tao", "wen", "an", "bo", "kai", "xin"]
IDIOMS = ["天道酬勤", "厚积薄发", "知行合一", "宁静致远", "脚踏实地", "自强不息", "精益求精", "持之以恒",
          "海纳百川", "实事求是", "淡泊明志", "锲而不舍", "温故知新", "学无止境", "笃行致远", "不忘初心"]
SLOGANS = ["品质至上", "服务第一", "科技点亮未来", "创新永不止步", "用心服务", "让生活更美好", "与时代同行",
           "诚信为本", "精工细作", "值得信赖"]
HOBBIES = ["登山", "下围棋", "钓鱼", "弹钢琴", "打羽毛球", "养花", "练书法", "摄影", "收集邮票", "长跑", "做木工",
           "听京剧", "游泳", "骑自行车", "写诗", "烹饪", "看纪录片", "练太极拳", "拉小提琴", "集邮"]
SPECIALTIES = ["蜜桔", "竹笋干", "黑茶", "腊肉", "银耳", "核桃", "米粉", "板栗", "香菇", "豆腐乳", "桂花糕",
               "葡萄酒", "牦牛肉干", "手工挂面", "脐橙", "莲藕"]
MODEL_WORDS = ["Mate", "Nova", "Note", "Pad", "Air", "Neo", "Ace", "Star", "Flip", "Book"]
MODEL_TAILS = ["Pro", "Max", "Lite", "SE", "Plus", "Ultra"]
CONNECTIVES = ["", "", "", "", "据介绍，", "另外，", "值得一提的是，", "公开资料显示，", "此外，"]
FILLERS = ["这些情况在当地几乎人人皆知。", "以下内容整理自多方公开报道，仅供参考。", "近年来，相关话题受到了越来越多的关注。",
           "不少读者来信询问其中的细节。", "编者在整理资料时尽量核对了每一处信息。", "有关部门表示将继续跟进后续进展。"]
KIND_TITLES = {"person": "人物简介", "company": "企业概况", "place": "地方风物"}
_FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


def _fw(rng: random.Random, s: str, p: float = 0.12) -> str:
    # a minority of values use full-width digits, as real Chinese web text does
    return s.translate(_FULLWIDTH) if rng.random() < p else s


def _pick(rng: random.Random, pool: str, k: int) -> str:
    return "".join(rng.choice(pool) for _ in range(k))


def _model(rng: random.Random) -> str:
    style = rng.randrange(4)
    if style == 0:
        return f"{_pick(rng, 'ABCDEFGHKMRSTVXZ', 2)}-{rng.randint(1, 99) * 100}"  # XR-7000
    if style == 1:
        return f"{rng.choice(MODEL_WORDS)} {rng.randint(2, 60)} {rng.choice(MODEL_TAILS)}"  # Mate 40 Pro
    if style == 2:
        return f"{rng.choice(MODEL_WORDS)} {rng.randint(2, 60)}"  # Nova 9
    return f"{rng.choice('KTQVZ')}{rng.randint(10, 99)}{rng.choice(['S', 'X', 'i', ''])}"  # K30S


def _email(rng: random.Random) -> str:
    while True:  # keep answers at most ~16 characters
        user = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 2))) + str(rng.randint(1, 999))
        email = f"{user}@{rng.choice(['example.cn', 'mail.com', '163.com', 'qq.com'])}"
        if len(email) <= 16:
            return email


def _website(rng: random.Random) -> str:
    while True:
        site = "www." + "".join(rng.sample(SYLLABLES, 2)) + rng.choice([".com", ".cn", ".com.cn", ".net"])
        if len(site) <= 16:
            return site


@dataclass(frozen=True)
class Relation:
    """One relation: entity kind, fact template ("{e}...{v}..."), question paraphrases, value generator."""
    kind: str
    fact: str
    questions: tuple[str, ...]
    value: Callable[[random.Random], str]

    @property
    def stem(self) -> str:
        """Fixed text between the entity and the value; identifies the relation inside a context."""
        return self.fact.split("{e}")[1].split("{v}")[0]


R = Relation
RELATIONS: dict[str, Relation] = {
    # people
    "birth_year": R("person", "{e}出生于{v}年，少年时代随家人多次搬迁。", ("{e}是哪一年出生的？", "{e}出生在哪年？", "{e}的出生年份是什么？"),
                    lambda r: _fw(r, str(r.randint(1940, 2005)))),
    "height": R("person", "{e}的身高为{v}，在同龄人中算得上显眼。", ("{e}的身高是多少？", "{e}有多高？"),
                lambda r: f"{r.randint(150, 199)}厘米"),
    "school": R("person", "{e}毕业于{v}，读书期间成绩一直名列前茅。", ("{e}毕业于哪所学校？", "{e}是从哪所学校毕业的？", "{e}的母校是哪里？"),
                lambda r: _pick(r, PLACE, 2) + r.choice(["大学", "理工大学", "师范大学", "财经大学", "外国语学院", "第一中学", "职业技术学院"])),
    "hobby": R("person", "{e}工作之余最大的爱好是{v}。", ("{e}的爱好是什么？", "{e}业余时间喜欢做什么？"),
               lambda r: r.choice(HOBBIES)),
    "email": R("person", "{e}对外公开的联系邮箱是{v}。", ("{e}的邮箱地址是什么？", "怎样通过电子邮件联系{e}？", "{e}的联系邮箱是什么？"),
               _email),
    "motto": R("person", "{e}常说自己的座右铭是“{v}”。", ("{e}的座右铭是什么？", "{e}信奉的格言是哪句话？"),
               lambda r: "，".join(r.sample(IDIOMS, r.randint(2, 3)))),
    "hometown": R("person", "{e}的老家在{v}，每年春节都会回去。", ("{e}的老家在哪里？", "{e}是哪里人？"),
                  lambda r: _pick(r, PLACE, 2) + "市"),  # not 县: that suffix is for place entities
    # companies
    "founded": R("company", "{e}成立于{v}，最初只有十几名员工。", ("{e}是什么时候成立的？", "{e}的成立时间是？"),
                 lambda r: _fw(r, f"{r.randint(1980, 2022)}年{r.randint(1, 12)}月")),
    "model": R("company", "{e}今年发布的旗舰型号是{v}，销量相当不错。", ("{e}的旗舰型号是什么？", "{e}今年发布了哪款旗舰产品？"),
               _model),
    "price": R("company", "{e}的主力产品定价为{v}，面向普通消费者。", ("{e}的主力产品卖多少钱？", "{e}主力产品的定价是多少？"),
               lambda r: f"{r.randint(199, 9999)}元" if r.random() < 0.7 else f"{r.randint(1, 99)}.{r.randint(1, 9)}万元"),
    "website": R("company", "{e}的官方网站是{v}，上面可以查到最新公告。", ("{e}的官网网址是什么？", "{e}的官方网站是哪个？"),
                 _website),
    "hq": R("company", "{e}的总部设在{v}，那里交通十分便利。", ("{e}的总部在哪里？", "{e}总部设在哪个城市？"),
            lambda r: _pick(r, PLACE, 2) + "市" + r.choice(["", "", "高新区", "经开区", "滨江新区"])),
    "slogan": R("company", "{e}多年来使用的宣传口号是“{v}”。", ("{e}的宣传口号是什么？", "{e}用什么口号做宣传？"),
                lambda r: "，".join(r.sample(SLOGANS, 2))),
    "employees": R("company", "{e}目前共有员工{v}，分布在多个城市。", ("{e}有多少员工？", "{e}的员工人数是多少？"),
                   lambda r: f"{r.randint(30, 9999)}人" if r.random() < 0.7 else f"{r.randint(1, 9)}.{r.randint(1, 9)}万人"),
    # places
    "distance": R("place", "{e}距离省城大约{v}，开车需要几个小时。", ("{e}离省城有多远？", "{e}距离省城多少公里？"),
                  lambda r: f"{r.randint(20, 900)}公里"),
    "population": R("place", "{e}的常住人口约为{v}，近年来略有增长。", ("{e}有多少常住人口？", "{e}的人口大约是多少？"),
                    lambda r: _fw(r, f"{r.randint(2, 300)}万人")),
    "specialty": R("place", "{e}最有名的特产是{v}，远销海内外。", ("{e}的特产是什么？", "{e}以什么特产闻名？"),
                   lambda r: r.choice(SPECIALTIES)),
    "postcode": R("place", "{e}的邮政编码是{v}，寄信时请注意填写。", ("{e}的邮编是多少？", "{e}的邮政编码是什么？"),
                  lambda r: _fw(r, str(r.randint(100000, 899999)))),
    "altitude": R("place", "{e}平均海拔约{v}，夏季气候凉爽。", ("{e}的海拔有多高？", "{e}平均海拔是多少？"),
                  lambda r: f"{r.randint(200, 4500)}米"),
    "landmark": R("place", "{e}最著名的景点是{v}，每逢假日游人如织。", ("{e}最著名的景点是哪里？", "到{e}旅游必去的景点是哪里？"),
                  lambda r: _pick(r, PLACE, 2) + r.choice(["古镇", "湖", "寺", "瀑布", "森林公园", "大峡谷", "温泉"])),
}
KINDS = ("person", "company", "place")
_BY_KIND = {k: [n for n, r in RELATIONS.items() if r.kind == k] for k in KINDS}


def is_dev_name(name: str) -> bool:
    """Split rule for entity names: a pure function of the string, so train/dev names are disjoint."""
    return sum((i + 1) * ord(c) for i, c in enumerate(name)) % 5 == 0


def _name(rng: random.Random, kind: str, dev: bool) -> str:
    while True:  # rejection sampling: ~1/5 of names are dev, ~4/5 train
        if kind == "person":
            name = rng.choice(SURNAMES) + _pick(rng, GIVEN, rng.randint(1, 2))
        elif kind == "company":
            name = _pick(rng, BRAND, 2) + rng.choice(["科技", "集团", "公司", "电子", "传媒", "食品"])
        else:
            name = _pick(rng, PLACE, 2) + rng.choice("县镇乡村")
        if is_dev_name(name) == dev:
            return name


def _unrelated(a: str, b: str) -> bool:
    return a not in b and b not in a


def _paragraph(rng: random.Random, dev: bool, max_q: int) -> tuple[str, str, list[tuple[str, str, str, int]]]:
    """Return (kind, context, [(relation, entity, value, answer_start)]) with 1..max_q questions."""
    while True:  # retries are rare (value collisions); deterministic because they draw from rng
        kind = rng.choice(KINDS)
        rels = rng.sample(_BY_KIND[kind], rng.randint(3, 5))
        n_ent, names = rng.randint(3, 6), []
        while len(names) < n_ent:  # no name inside another, so counting a name's occurrences is exact
            name = _name(rng, kind, dev)
            if all(_unrelated(name, o) for o in names):
                names.append(name)
        pairs = [(e, r) for e in names for r in rels]
        rng.shuffle(pairs)
        facts = pairs[:rng.randint(8, 16)]
        values: dict[tuple[str, str], str] = {}
        for fact in facts:
            for _ in range(30):  # redraw values that overlap another value or a name
                v = RELATIONS[fact[1]].value(rng)
                if all(_unrelated(v, o) for o in [*values.values(), *names]):
                    break
            values[fact] = v
        items = [(rng.choice(CONNECTIVES), f) for f in facts] + [(s, None) for s in rng.sample(FILLERS, rng.randint(0, 3))]
        rng.shuffle(items)
        context, starts = "", {}
        for prefix, fact in items:
            if fact is None:
                context += prefix
                continue
            head, tail = RELATIONS[fact[1]].fact.split("{v}")
            context += prefix + head.format(e=fact[0])
            starts[fact] = len(context)
            context += values[fact] + tail
        per_rel = {r: sum(f[1] == r for f in facts) for r in rels}
        per_ent = {e: sum(f[0] == e for f in facts) for e in names}
        # askable: relation has a distractor, answer string and entity mention are unambiguous
        cands = [f for f in facts if per_rel[f[1]] >= 2 and context.count(values[f]) == 1
                 and context.count(f[0]) == per_ent[f[0]]]
        if len(cands) >= min(2, max_q):
            asked = rng.sample(cands, min(rng.randint(2, 4), len(cands), max_q))
            return kind, context, [(r, e, values[(e, r)], starts[(e, r)]) for e, r in asked]


def _split(n: int, seed: int, split: str) -> dict:
    # one stream per split: train does not depend on n_dev, and a smaller n gives a prefix
    rng = random.Random(2 * seed + (split == "dev"))
    data, n_q = [], 0
    while n_q < n:
        kind, context, qs = _paragraph(rng, split == "dev", n - n_q)
        qas = []
        for rel, ent, val, start in qs:
            qas.append({"id": f"demo-{split}-{n_q:06d}", "question": rng.choice(RELATIONS[rel].questions).format(e=ent),
                        "answers": [{"text": val, "answer_start": start}], "type": rel})
            n_q += 1
        data.append({"title": f"{KIND_TITLES[kind]}{len(data):04d}", "paragraphs": [{"context": context, "qas": qas}]})
    return {"version": VERSION, "data": data}


def make_demo(n_train: int = 3000, n_dev: int = 400, seed: int = 13) -> tuple[dict, dict]:
    """Return (train_squad, dev_squad) with exactly n_train / n_dev questions, deterministic in seed."""
    return _split(n_train, seed, "train"), _split(n_dev, seed, "dev")


def question_entity(qa: dict) -> str:
    """Recover the entity name a generated question asks about (parses its question template)."""
    for tmpl in RELATIONS[qa["type"]].questions:
        m = re.fullmatch(re.escape(tmpl).replace(re.escape("{e}"), "(.+)"), qa["question"])
        if m:
            return m.group(1)
    raise ValueError(f"not a demo question: {qa['question']!r}")


def _dumps(obj: dict) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def _atomic_write(path: Path, blob: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(blob)
        os.replace(tmp, path)  # readers never see a half-written file
    finally:
        tmp.unlink(missing_ok=True)


def write_demo(root, needed=None, *, n_train: int = 3000, n_dev: int = 400, seed: int = 13) -> list[str]:
    """Make root/demo/{train,dev}.json match make_demo(...); return the relative paths actually written."""
    del needed  # interface compatibility with the other data preparers; both files are always ensured
    out = Path(root) / "demo"
    out.mkdir(parents=True, exist_ok=True)
    train, dev = make_demo(n_train, n_dev, seed)
    blobs = {"train.json": _dumps(train), "dev.json": _dumps(dev)}
    shas = {k: hashlib.sha256(b).hexdigest() for k, b in blobs.items()}
    meta = {"version": VERSION, "n_train": n_train, "n_dev": n_dev, "seed": seed, "sha256": shas}
    try:
        old = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = None
    written = []
    for name, blob in blobs.items():
        path = out / name
        # trust the stored hash only if the file on disk still has it (it may have been edited)
        same = (old or {}).get("sha256", {}).get(name) == shas[name] and path.is_file() \
            and hashlib.sha256(path.read_bytes()).hexdigest() == shas[name]
        if not same:
            _atomic_write(path, blob)
            written.append(f"demo/{name}")
    if old != meta:
        _atomic_write(out / "meta.json", json.dumps(meta, ensure_ascii=False, indent=1).encode("utf-8"))
        written.append("demo/meta.json")
    return written


def main(argv: list[str] | None = None) -> int:
    """CLI: python -m mrc.demo_data OUT_DIR [--n-train N] [--n-dev N] [--seed S]."""
    ap = argparse.ArgumentParser(description="Write the synthetic Chinese demo MRC data set (SQuAD format).")
    ap.add_argument("out_dir")
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--n-dev", type=int, default=400)
    ap.add_argument("--seed", type=int, default=13)
    a = ap.parse_args(argv)
    written = write_demo(a.out_dir, n_train=a.n_train, n_dev=a.n_dev, seed=a.seed)
    print("\n".join(written) if written else "demo data already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
