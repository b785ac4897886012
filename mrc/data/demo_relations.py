"""Vocabulary of the synthetic demo data: character pools, value generators and relations.

``RELATIONS`` (people, companies, places) make the training, dev and checklist data;
``WORK_RELATIONS`` (books, films) appear only in the generalization split, so it tests relations and
phrasings never seen in training; ``HELDOUT_QUESTIONS`` are question wordings used only by the
checklist's ``paraphrase`` type.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

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
# Relations of the generalization split only: other entity kinds, other relations, other phrasing.
WORK_TAILS = {"book": ["往事", "之歌", "手记", "纪事", "笔记", "的黄昏", "简史"],
              "film": ["风云", "归途", "大营救", "之夜", "追光者", "密令", "少年"]}
WORK_RELATIONS: dict[str, Relation] = {
    "author": R("book", "{e}的作者是{v}，这是其第一部长篇作品。", ("{e}的作者是谁？", "{e}是谁写的？"),
                lambda r: r.choice(SURNAMES) + _pick(r, GIVEN, r.randint(1, 2))),
    "pages": R("book", "{e}全书共{v}，分为上下两册。", ("{e}有多少页？", "{e}全书一共多少页？"),
               lambda r: f"{r.randint(120, 980)}页"),
    "publisher": R("book", "{e}由{v}出版，首印即告售罄。", ("{e}是哪家出版社出版的？", "{e}的出版社是哪家？"),
                   lambda r: _pick(r, PLACE, 2) + r.choice(["出版社", "人民出版社", "文艺出版社", "大学出版社"])),
    "published": R("book", "{e}首次出版于{v}，此后多次再版。", ("{e}是哪一年出版的？", "{e}首次出版是在什么时候？"),
                   lambda r: _fw(r, f"{r.randint(1950, 2023)}年")),
    "director": R("film", "{e}的导演是{v}，拍摄历时两年。", ("{e}的导演是谁？", "{e}是谁导演的？"),
                  lambda r: r.choice(SURNAMES) + _pick(r, GIVEN, r.randint(1, 2))),
    "runtime": R("film", "{e}片长{v}，节奏紧凑。", ("{e}片长多少？", "{e}的片长是多少分钟？"),
                 lambda r: f"{r.randint(80, 180)}分钟"),
    "box_office": R("film", "{e}上映后累计票房达到{v}，口碑不俗。", ("{e}的票房是多少？", "{e}累计票房有多少？"),
                    lambda r: f"{r.randint(1, 49)}.{r.randint(1, 9)}亿元"),
    "release": R("film", "{e}于{v}在全国上映。", ("{e}是什么时候上映的？", "{e}的上映日期是哪天？"),
                 lambda r: _fw(r, f"{r.randint(1990, 2024)}年{r.randint(1, 12)}月{r.randint(1, 28)}日")),
}

# Question wordings never used in training (checklist type "paraphrase").
HELDOUT_QUESTIONS: dict[str, str] = {
    "birth_year": "{e}生于哪一年？", "height": "{e}身高多少？", "school": "{e}在哪所学校念的书？",
    "hobby": "{e}平时最喜欢干什么？", "email": "{e}的电子邮箱是多少？", "motto": "{e}的人生格言是什么？",
    "hometown": "{e}的家乡在哪儿？", "founded": "{e}创办于何时？", "model": "{e}的旗舰机型叫什么？",
    "price": "{e}的主力产品售价多少？", "website": "{e}的网址是多少？", "hq": "{e}的总部位于何处？",
    "slogan": "{e}的广告语是什么？", "employees": "{e}一共有多少名员工？", "distance": "从{e}到省城有多远？",
    "population": "{e}常住人口有多少？", "specialty": "{e}出产什么有名的特产？", "postcode": "{e}的邮编号码是什么？",
    "altitude": "{e}的平均海拔是多少米？", "landmark": "{e}有什么著名景点？",
}
