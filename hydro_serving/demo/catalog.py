"""A generated product catalog: families of real-looking products and their sellable variants.

The demo classifier must learn what makes two listings *the same product*, so the catalog is
built around the cases that make that hard: model lines with many siblings (iPhone 7 / 8 / X),
the same model in several storages, colours and sizes, and kits versus bare tools. A **product**
here is a SKU: brand + model + every variant attribute (storage, colour, size, format, kit). So
an iPhone 7 32GB Black and an iPhone 7 128GB Black are *different products*, as they are for a
shop or a price-comparison site; condition, seller wording and missing specifics are not.

Every SKU gets its own UPC (valid check digit), EAN-13 and MPN, derived from a seeded random
generator, so the catalog is identical on every machine for the same seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from itertools import product as cartesian


@dataclass(frozen=True)
class Product:
    """One SKU. ``family`` (the model line) is the unit of the train/test split."""

    sku: str
    family: str
    category: str
    brand: str | None  # None: an unbranded product, listed as 'Unbranded'
    model: str
    kind: str  # the noun a title ends with: "Smartphone", "Power Filter", ...
    variant: tuple[tuple[str, str], ...]  # identity attributes, as (ItemSpecifics key, value)
    specs: tuple[tuple[str, str], ...]  # descriptive attributes shared by the family
    upc: str
    ean: str
    mpn: str | None
    isbn: str | None = None
    title_extras: tuple[str, ...] = field(default=())  # words sellers put in titles: "(Verizon)", "4K"


@dataclass(frozen=True)
class Family:
    category: str
    brand: str | None
    model: str
    kind: str
    axes: tuple[tuple[str, tuple[str, ...]], ...]  # variant key -> possible values
    specs: tuple[tuple[str, str], ...] = ()
    mpn: str | None = "auto"  # "auto": generated per SKU; a template with {key} fields; None: no MPN
    extras: tuple[str, ...] = ()
    max_skus: int = 6


def _f(category: str, brand: str | None, model: str, kind: str, axes: dict[str, list[str]],
       specs: dict[str, str] | None = None, mpn: str | None = "auto", extras: tuple[str, ...] = (),
       max_skus: int = 6) -> Family:
    return Family(category, brand, model, kind, tuple((k, tuple(v)) for k, v in axes.items()),
                  tuple((specs or {}).items()), mpn, extras, max_skus)


PHONE = "Cell Phones & Smartphones"
LAPTOP = "Laptops & Netbooks"
TV = "Televisions"
AUDIO = "Headphones"
CAMERA = "Digital Cameras"
AQUA = "Pet Supplies: Aquarium & Fish"
PET = "Pet Supplies: Dogs & Cats"
KITCHEN = "Small Kitchen Appliances"
TOOLS = "Power Tools"
BOOKS = "Books"
CLOTHING = "Clothing, Shoes & Accessories"


def _phones() -> list[Family]:
    out = []
    lines = [
        ("Apple", "iPhone 5", ["16GB", "32GB", "64GB"], ["Black & Slate", "White & Silver"], "Dual Core", "8.0MP",
         "4''"),
        ("Apple", "iPhone 5s", ["16GB", "32GB", "64GB"], ["Space Gray", "Silver", "Gold"], "Dual Core", "8.0MP", "4''"),
        ("Apple", "iPhone 6", ["16GB", "64GB", "128GB"], ["Space Gray", "Silver", "Gold"], "Dual Core", "8.0MP",
         "4.7''"),
        ("Apple", "iPhone 6 Plus", ["16GB", "64GB", "128GB"], ["Space Gray", "Silver", "Gold"], "Dual Core", "8.0MP",
         "5.5''"),
        ("Apple", "iPhone 7", ["32GB", "128GB", "256GB"], ["Black", "Jet Black", "Silver", "Gold", "Rose Gold"],
         "Quad Core", "12.0MP", "4.7''"),
        ("Apple", "iPhone 8", ["64GB", "256GB"], ["Space Gray", "Silver", "Gold"], "Hexa Core", "12.0MP", "4.7''"),
        ("Apple", "iPhone X", ["64GB", "256GB"], ["Space Gray", "Silver"], "Hexa Core", "12.0MP", "5.8''"),
        ("Apple", "iPhone 11", ["64GB", "128GB"], ["Black", "White", "Purple", "Green"], "Hexa Core", "12.0MP",
         "6.1''"),
        ("Apple", "iPhone 12", ["64GB", "128GB", "256GB"], ["Black", "White", "Blue", "Red"], "Hexa Core", "12.0MP",
         "6.1''"),
        ("Samsung", "Galaxy S7", ["32GB"], ["Black Onyx", "Gold Platinum", "Silver Titanium"], "Octa Core", "12.0MP",
         "5.1''"),
        ("Samsung", "Galaxy S8", ["64GB"], ["Midnight Black", "Orchid Gray", "Arctic Silver"], "Octa Core", "12.0MP",
         "5.8''"),
        ("Samsung", "Galaxy S9", ["64GB", "128GB"], ["Midnight Black", "Coral Blue", "Lilac Purple"], "Octa Core",
         "12.0MP", "5.8''"),
        ("Samsung", "Galaxy S10", ["128GB", "512GB"], ["Prism Black", "Prism White", "Prism Blue"], "Octa Core",
         "16.0MP", "6.1''"),
        ("Samsung", "Galaxy Note 9", ["128GB", "512GB"], ["Midnight Black", "Ocean Blue", "Lavender Purple"],
         "Octa Core", "12.0MP", "6.4''"),
        ("Samsung", "Galaxy A51", ["64GB", "128GB"], ["Prism Crush Black", "Prism Crush White"], "Octa Core",
         "48.0MP", "6.5''"),
        ("Google", "Pixel 3", ["64GB", "128GB"], ["Just Black", "Clearly White", "Not Pink"], "Octa Core", "12.2MP",
         "5.5''"),
        ("Google", "Pixel 4", ["64GB", "128GB"], ["Just Black", "Clearly White", "Oh So Orange"], "Octa Core",
         "12.2MP", "5.7''"),
        ("Google", "Pixel 5", ["128GB"], ["Just Black", "Sorta Sage"], "Octa Core", "12.2MP", "6.0''"),
        ("Motorola", "Moto G7", ["32GB", "64GB"], ["Ceramic Black", "Clear White"], "Octa Core", "12.0MP", "6.2''"),
        ("Motorola", "Moto G Power", ["32GB", "64GB"], ["Smoke Black", "Flash Gray"], "Octa Core", "16.0MP", "6.4''"),
        ("OnePlus", "7T", ["128GB", "256GB"], ["Glacier Blue", "Frosted Silver"], "Octa Core", "48.0MP", "6.55''"),
        ("OnePlus", "8 Pro", ["128GB", "256GB"], ["Onyx Black", "Glacial Green", "Ultramarine Blue"], "Octa Core",
         "48.0MP", "6.78''"),
    ]
    networks = ["Verizon", "AT&T", "T-Mobile", "Unlocked", "Sprint"]
    for i, (brand, model, storage, colors, cpu, camera, screen) in enumerate(lines):
        network = networks[i % len(networks)]
        out.append(_f(PHONE, brand, model, "Smartphone",
                      {"Storage Capacity": storage, "Color": colors},
                      {"Style": "Bar", "Processor": cpu, "Camera Resolution": camera, "Screen Size": screen,
                       "Network": network,
                       "Lock Status": "Factory Unlocked" if network == "Unlocked" else "Network Locked"},
                      extras=(f"({network})",), max_skus=5))
    return out


def _laptops() -> list[Family]:
    rows = [
        ("Dell", "XPS 13 9370", ["i5-8250U 8GB RAM 256GB SSD", "i7-8550U 16GB RAM 512GB SSD"], ["Silver"], "13.3''"),
        ("Dell", "Inspiron 15 3000", ["i3-1005G1 8GB RAM 256GB SSD", "i5-1035G1 8GB RAM 512GB SSD"], ["Black"],
         "15.6''"),
        ("Lenovo", "ThinkPad T480", ["i5-8350U 8GB RAM 256GB SSD", "i7-8650U 16GB RAM 512GB SSD"], ["Black"], "14''"),
        ("Lenovo", "ThinkPad X1 Carbon 6th Gen", ["i5-8250U 8GB RAM 256GB SSD", "i7-8650U 16GB RAM 1TB SSD"],
         ["Black"], "14''"),
        ("HP", "Pavilion 15", ["i5-1135G7 8GB RAM 256GB SSD", "i7-1165G7 16GB RAM 512GB SSD"],
         ["Natural Silver", "Fog Blue"], "15.6''"),
        ("Apple", "MacBook Air 13 2017", ["i5 8GB RAM 128GB SSD", "i5 8GB RAM 256GB SSD"], ["Silver"], "13.3''"),
        ("Apple", "MacBook Pro 13 2019", ["i5 8GB RAM 128GB SSD", "i5 8GB RAM 256GB SSD", "i7 16GB RAM 512GB SSD"],
         ["Space Gray", "Silver"], "13.3''"),
        ("Asus", "ZenBook 14 UX425", ["i5-1135G7 8GB RAM 512GB SSD", "i7-1165G7 16GB RAM 1TB SSD"], ["Pine Grey"],
         "14''"),
        ("Acer", "Aspire 5 A515", ["Ryzen 3 4GB RAM 128GB SSD", "Ryzen 5 8GB RAM 256GB SSD"], ["Silver"], "15.6''"),
    ]
    return [_f(LAPTOP, brand, model, "Laptop", {"Configuration": configs, "Color": colors},
               {"Screen Size": screen, "Operating System": "macOS" if brand == "Apple" else "Windows 10"},
               max_skus=6) for brand, model, configs, colors, screen in rows]


def _tvs() -> list[Family]:
    rows = [
        ("Samsung", "TU7000 Crystal UHD", "UN{size}TU7000FXZA", ["43", "50", "55", "65", "75"], "4K"),
        ("Samsung", "Q60T QLED", "QN{size}Q60TAFXZA", ["43", "55", "65"], "4K"),
        ("LG", "UN7300 Series", "{size}UN7300PUF", ["43", "50", "55", "65"], "4K"),
        ("LG", "OLED C1", "OLED{size}C1PUB", ["48", "55", "65"], "4K"),
        ("Sony", "X80J Bravia", "KD{size}X80J", ["43", "50", "55", "65"], "4K"),
        ("TCL", "5-Series Roku", "{size}S525", ["50", "55", "65"], "4K"),
        ("Vizio", "V-Series", "V{size}5-J01", ["40", "50", "55", "65"], "4K"),
        ("Insignia", "Fire TV Edition", "NS-{size}DF710NA21", ["32", "43", "50"], "HD"),
    ]
    return [_f(TV, brand, model, "Smart TV", {"Screen Size": [f"{s}''" for s in sizes]},
               {"Resolution": "4K (2160p)" if res == "4K" else "1080p", "Display Technology": "LED"},
               mpn=mpn.replace("{size}", "{screen}"), extras=(res,), max_skus=5)
            for brand, model, mpn, sizes, res in rows]


def _headphones() -> list[Family]:
    rows = [
        ("Sony", "WH-1000XM3", ["Black", "Silver"], "Wireless Noise Cancelling Headphones"),
        ("Sony", "WH-1000XM4", ["Black", "Silver", "Midnight Blue"], "Wireless Noise Cancelling Headphones"),
        ("Bose", "QuietComfort 35 II", ["Black", "Silver"], "Wireless Headphones"),
        ("Bose", "QuietComfort 45", ["Black", "White Smoke"], "Wireless Headphones"),
        ("Apple", "AirPods Pro", ["White"], "Wireless Earbuds"),
        ("Apple", "AirPods 2nd Generation", ["White"], "Wireless Earbuds"),
        ("Beats", "Studio3 Wireless", ["Matte Black", "White", "Red", "Blue"], "Over-Ear Headphones"),
        ("JBL", "Tune 500BT", ["Black", "Blue", "White"], "On-Ear Headphones"),
        ("Sennheiser", "HD 280 Pro", ["Black"], "Studio Monitor Headphones"),
        ("Jabra", "Elite 75t", ["Titanium Black", "Gold Beige", "Navy"], "True Wireless Earbuds"),
    ]
    return [_f(AUDIO, brand, model, kind, {"Color": colors},
               {"Connectivity": "Bluetooth" if "Wireless" in kind else "Wired", "Type": kind.split()[-1]})
            for brand, model, colors, kind in rows]


def _cameras() -> list[Family]:
    rows = [
        ("Canon", "EOS Rebel T7", ["Body Only", "with EF-S 18-55mm Lens"], ["Black"], "24.1MP"),
        ("Canon", "EOS 90D", ["Body Only", "with EF-S 18-135mm Lens"], ["Black"], "32.5MP"),
        ("Nikon", "D3500", ["Body Only", "with AF-P 18-55mm Lens"], ["Black"], "24.2MP"),
        ("Nikon", "D7500", ["Body Only", "with 18-140mm Lens"], ["Black"], "20.9MP"),
        ("Sony", "Alpha a6000", ["Body Only", "with 16-50mm Lens"], ["Black", "Silver"], "24.3MP"),
        ("Sony", "Alpha a6400", ["Body Only", "with 16-50mm Lens"], ["Black", "Silver"], "24.2MP"),
        ("Fujifilm", "X-T30", ["Body Only", "with XC 15-45mm Lens"], ["Black", "Silver"], "26.1MP"),
        ("GoPro", "HERO9 Black", ["Camera Only", "Bundle with Extra Battery"], ["Black"], "20.0MP"),
        ("GoPro", "HERO8 Black", ["Camera Only", "Bundle with Extra Battery"], ["Black"], "12.0MP"),
    ]
    return [_f(CAMERA, brand, model, "Digital Camera", {"Kit": kits, "Color": colors},
               {"Maximum Resolution": mp, "Series": model.split()[0]}) for brand, model, kits, colors, mp in rows]


def _aquarium_and_pets() -> list[Family]:
    rows = [
        (AQUA, "Aqueon", "QuietFlow LED PRO", "Aquarium Power Filter", {"Tank Capacity": ["10 Gallon", "20 Gallon",
                                                                                          "30 Gallon", "50 Gallon",
                                                                                          "75 Gallon"]}),
        (AQUA, "Tetra", "Whisper IQ", "Aquarium Power Filter", {"Tank Capacity": ["10 Gallon", "20 Gallon",
                                                                                  "30 Gallon", "45 Gallon"]}),
        (AQUA, "Fluval", "C Power Filter", "Aquarium Filter", {"Filter Size": ["C2", "C3", "C4"]}),
        (AQUA, "Eheim", "Jager Aquarium Thermostat", "Heater", {"Wattage": ["50W", "75W", "100W", "150W", "200W"]}),
        (AQUA, "Tetra", "Whisper Air Pump", "Aquarium Air Pump", {"Tank Capacity": ["10 Gallon", "20 Gallon",
                                                                                    "40 Gallon", "60 Gallon"]}),
        (AQUA, None, "Aquarium Fish Tank Vacuum Gravel Cleaner", "Water Siphon Pump", {"Size": ["Small", "Large"]}),
        (AQUA, None, "Aquarium Air Stone Bubble Disc", "Diffuser", {"Size": ["2 inch", "4 inch"]}),
        (AQUA, "Python", "No Spill Clean and Fill", "Aquarium Maintenance System", {"Length": ["25 ft", "50 ft",
                                                                                               "75 ft"]}),
        (AQUA, "API", "Freshwater Master Test Kit", "Water Test Kit", {"Count": ["800 Tests"]}),
        (PET, "Kong", "Classic Dog Toy", "Chew Toy", {"Size": ["Small", "Medium", "Large", "X-Large"]}),
        (PET, "PetSafe", "Easy Walk Dog Harness", "Harness", {"Size": ["Small", "Medium", "Large"],
                                                              "Color": ["Black", "Red", "Royal Blue"]}),
        (PET, None, "Retractable Dog Leash", "Leash", {"Length": ["16 ft", "26 ft"], "Color": ["Black", "Blue",
                                                                                               "Pink"]}),
        (PET, "Catit", "Flower Fountain", "Cat Water Fountain", {"Capacity": ["3 L"], "Color": ["White", "Green"]}),
    ]
    out = []
    for category, brand, model, kind, axes in rows:
        specs = {"Type": kind, "Material": "Plastic"}
        if brand is None:
            specs["Designer/Brand"] = "Unbranded"
        out.append(_f(category, brand, model, kind, axes, specs, mpn=None if brand is None else "auto"))
    return out


def _kitchen() -> list[Family]:
    return [
        _f(KITCHEN, "KitchenAid", "Artisan 5-Qt Tilt-Head", "Stand Mixer",
           {"Color": ["Empire Red", "Onyx Black", "White", "Contour Silver", "Pistachio", "Aqua Sky"]},
           {"Capacity": "5 Qt", "Wattage": "325W"}, mpn="KSM150PS{color_code}", max_skus=6),
        _f(KITCHEN, "Instant Pot", "Duo 7-in-1", "Electric Pressure Cooker", {"Capacity": ["3 Qt", "6 Qt", "8 Qt"]},
           {"Material": "Stainless Steel"}),
        _f(KITCHEN, "Instant Pot", "Duo Plus 9-in-1", "Electric Pressure Cooker", {"Capacity": ["3 Qt", "6 Qt",
                                                                                             "8 Qt"]},
           {"Material": "Stainless Steel"}),
        _f(KITCHEN, "Ninja", "Professional BL610", "Countertop Blender", {"Capacity": ["72 oz"]},
           {"Wattage": "1000W"}),
        _f(KITCHEN, "Keurig", "K-Classic K50", "Single Serve Coffee Maker", {"Color": ["Black", "Rhubarb"]},
           {"Capacity": "48 oz"}),
        _f(KITCHEN, "Cuisinart", "DCC-3200 PerfecTemp", "Programmable Coffeemaker", {"Capacity": ["14 Cup"],
                                                                                     "Color": ["Black",
                                                                                               "Stainless"]}),
        _f(KITCHEN, "Lodge", "Pre-Seasoned Cast Iron", "Skillet", {"Size": ["8 inch", "10.25 inch", "12 inch"]},
           {"Material": "Cast Iron"}),
        _f(KITCHEN, "Vitamix", "E310 Explorian", "Blender", {"Color": ["Black", "Red", "Slate"]},
           {"Capacity": "48 oz"}),
    ]


def _tools() -> list[Family]:
    rows = [
        ("DeWalt", "20V MAX Cordless Drill Driver DCD771", "Drill", {"Kit": ["Tool Only", "Kit with 2 Batteries"]},
         "20V"),
        ("DeWalt", "20V MAX XR Impact Driver DCF887", "Impact Driver", {"Kit": ["Tool Only",
                                                                               "Kit with 2 Batteries"]}, "20V"),
        ("DeWalt", "20V MAX Circular Saw DCS570", "Circular Saw", {"Kit": ["Tool Only"]}, "20V"),
        ("Makita", "18V LXT Driver-Drill XFD131", "Drill", {"Kit": ["Tool Only", "Kit with Battery"]}, "18V"),
        ("Makita", "18V LXT Impact Driver XDT13", "Impact Driver", {"Kit": ["Tool Only", "Kit with Battery"]}, "18V"),
        ("Milwaukee", "M18 FUEL Hammer Drill 2804", "Hammer Drill", {"Kit": ["Tool Only", "Kit with 2 Batteries"]},
         "18V"),
        ("Milwaukee", "M12 Impact Driver 2462", "Impact Driver", {"Kit": ["Tool Only", "Kit with 2 Batteries"]},
         "12V"),
        ("Bosch", "12V Max Drill Driver PS31", "Drill", {"Kit": ["Tool Only", "Kit with 2 Batteries"]}, "12V"),
        ("Ryobi", "ONE+ 18V Drill Driver P215", "Drill", {"Kit": ["Tool Only", "Kit with Battery"]}, "18V"),
    ]
    return [_f(TOOLS, brand, model, kind, axes, {"Voltage": volts, "Power Source": "Battery"})
            for brand, model, kind, axes, volts in rows]


def _books() -> list[Family]:
    rows = [
        ("Harry Potter and the Sorcerer's Stone", "J.K. Rowling", "Scholastic"),
        ("The Hobbit", "J.R.R. Tolkien", "Houghton Mifflin"),
        ("Atomic Habits", "James Clear", "Avery"),
        ("Where the Crawdads Sing", "Delia Owens", "G.P. Putnam's Sons"),
        ("Sapiens: A Brief History of Humankind", "Yuval Noah Harari", "Harper"),
        ("Dune", "Frank Herbert", "Ace"),
        ("Nineteen Eighty-Four 1984", "George Orwell", "Signet Classics"),
        ("To Kill a Mockingbird", "Harper Lee", "Harper Perennial"),
        ("The Great Gatsby", "F. Scott Fitzgerald", "Scribner"),
        ("Becoming", "Michelle Obama", "Crown"),
        ("The Catcher in the Rye", "J.D. Salinger", "Little, Brown"),
        ("Educated: A Memoir", "Tara Westover", "Random House"),
    ]
    return [_f(BOOKS, None, title, "Book", {"Format": ["Hardcover", "Paperback"]},
               {"Author": author, "Publisher": publisher, "Language": "English"}, mpn=None)
            for title, author, publisher in rows]


def _clothing() -> list[Family]:
    return [
        _f(CLOTHING, "Levi's", "501 Original Fit", "Men's Jeans",
           {"Size": ["30x30", "32x32", "34x32", "36x30"], "Color": ["Medium Stonewash", "Black", "Rinse"]},
           {"Material": "100% Cotton", "Fit": "Straight"}, max_skus=6),
        _f(CLOTHING, "Nike", "Air Max 90", "Men's Shoes",
           {"US Shoe Size (Men's)": ["9", "10", "11"], "Color": ["White Black", "Triple Black"]},
           {"Style": "Sneaker"}, max_skus=6),
        _f(CLOTHING, "Adidas", "Ultraboost 21", "Running Shoes",
           {"US Shoe Size (Men's)": ["9", "10", "11"], "Color": ["Core Black", "Cloud White"]},
           {"Style": "Running"}, max_skus=5),
        _f(CLOTHING, "Champion", "Reverse Weave Pullover", "Hoodie",
           {"Size": ["Small", "Medium", "Large", "X-Large"], "Color": ["Black", "Oxford Gray", "Navy"]},
           {"Material": "Cotton Blend"}, max_skus=6),
        _f(CLOTHING, "Carhartt", "K87 Workwear Pocket", "T-Shirt",
           {"Size": ["Medium", "Large", "X-Large"], "Color": ["Black", "Navy", "Brown"]},
           {"Material": "Cotton"}, max_skus=5),
        _f(CLOTHING, "The North Face", "Denali 2", "Fleece Jacket",
           {"Size": ["Small", "Medium", "Large"], "Color": ["TNF Black", "Navy"]}, {"Material": "Polyester"},
           max_skus=4),
    ]


def families() -> list[Family]:
    """Every product line of the catalog, category by category."""
    return [*_phones(), *_laptops(), *_tvs(), *_headphones(), *_cameras(), *_aquarium_and_pets(), *_kitchen(),
            *_tools(), *_books(), *_clothing()]


# ---- codes ------------------------------------------------------------------------------------------


def upc_check_digit(digits11: str) -> str:
    odd = sum(int(d) for d in digits11[0::2])
    even = sum(int(d) for d in digits11[1::2])
    return str((10 - (odd * 3 + even) % 10) % 10)


def ean_check_digit(digits12: str) -> str:
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(digits12))
    return str((10 - total % 10) % 10)


def _upc(rng: random.Random) -> str:
    body = "".join(str(rng.randrange(10)) for _ in range(11))
    return body + upc_check_digit(body)


def _ean(rng: random.Random, prefix: str = "489") -> str:
    body = prefix + "".join(str(rng.randrange(10)) for _ in range(12 - len(prefix)))
    return body + ean_check_digit(body)


def _isbn13(rng: random.Random) -> str:
    return _ean(rng, "978")


def _mpn(rng: random.Random, family: Family, variant: dict[str, str]) -> str | None:
    if family.mpn is None:
        return None
    if family.mpn != "auto":
        screen = variant.get("Screen Size", "").rstrip("'")
        color_code = "".join(w[0] for w in variant.get("Color", "X").split()).upper()
        return family.mpn.format(screen=screen, color_code=color_code.ljust(2, "X"))
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"
    head = "".join(rng.choice(letters) for _ in range(2))
    digits = "".join(str(rng.randrange(10)) for _ in range(3 + rng.randrange(2)))
    tail = "LL/A" if family.brand == "Apple" else rng.choice(["-B", "-US", "NA", "XAA", "", "/01"])
    return f"{head}{digits}{tail}"


def build_catalog(seed: int = 5) -> list[Product]:
    """All SKUs: each family's variants (capped at ``max_skus``, a seeded sample), with codes."""
    rng = random.Random(seed)
    products: list[Product] = []
    seen_codes: set[str] = set()
    for index, family in enumerate(families()):
        keys = [k for k, _ in family.axes]
        combos = list(cartesian(*(values for _, values in family.axes)))
        if len(combos) > family.max_skus:
            combos = sorted(rng.sample(combos, family.max_skus))
        family_id = f"f{index:03d}"
        for values in combos:
            variant = dict(zip(keys, values, strict=True))
            isbn = _isbn13(rng) if family.category == BOOKS else None
            while True:
                upc = _upc(rng)
                ean = isbn or ("0" + upc if family.brand else _ean(rng))
                if ean not in seen_codes:
                    seen_codes.add(ean)
                    break
            if isbn:  # a book's only code is its ISBN; sellers paste it under UPC and EAN too
                upc = isbn
            products.append(Product(
                sku=f"{family_id}-{len([p for p in products if p.family == family_id])}",
                family=family_id,
                category=family.category,
                brand=family.brand,
                model=family.model,
                kind=family.kind,
                variant=tuple(variant.items()),
                specs=family.specs,
                upc=upc,
                ean=ean,
                mpn=_mpn(rng, family, variant),
                isbn=isbn,
                title_extras=family.extras,
            ))
    return products
