"""The comparison page (``eval.py --html``): the writer without a browser, then in headless Chromium.

The browser test needs Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``,
``/usr/bin/chromedriver``) and the ``selenium`` package; without them it is skipped with a reason
naming what is missing (``pytest -rs`` prints it). Selenium never downloads a driver here: the
driver path is given explicitly.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import numpy as np
import pytest
import torch

from common_utils.evaluation import eval as eval_cli
from common_utils.evaluation import reproduce as reproduce_mod
from common_utils.evaluation.evaluator import EvalProtocol
from common_utils.evaluation.html_page import ComparisonPage, safe_stem
from common_utils.evaluation.runner import evaluate_datasets
from data import build_dataset
from data.image_io import read_image, write_image
from models import build_network
from tests.helpers import REPO_ROOT, make_image

ROOT = REPO_ROOT
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# image names with a space, unicode, '#' and '%' (each must be URL-encoded in the links)
NAMES = ["img 1", "café #2", "ünï 3%", "plain4", "x 5"]


def page_data(index: Path) -> dict[str, Any]:
    """The JSON block embedded in a page."""
    text = index.read_text(encoding="utf-8")
    m = re.search(r'<script type="application/json" id="page-data">(.*?)</script>', text, re.S)
    assert m, "no embedded JSON"
    return json.loads(m.group(1))


def make_set(root: Path, n: int = len(NAMES), size: tuple[int, int] = (40, 56)) -> tuple[Path, Path]:
    """Paired low/high folders of ``NAMES`` (low = darkened high, a different factor per image)."""
    for i, name in enumerate(NAMES[:n]):
        gt = make_image(size, 10 + i)
        write_image(root / "high" / f"{name}.png", gt)
        write_image(root / "low" / f"{name}.png", gt * (0.2 + 0.12 * i))
    return root / "low", root / "high"


def run_page(tmp_path: Path, out: Path, page: bool = True) -> dict[str, Any]:
    """Two networks (brighten x2, x3) and the input scored on the generated set, with a page."""
    lq, gt = make_set(tmp_path / "data ü")
    ds = build_dataset("paired_folder", lq_dir=str(lq), gt_dir=str(gt))
    nets = {"Net A": lambda x: x * 2.0, "B×3": lambda x: x * 3.0}
    return evaluate_datasets(nets, {"set é 1": ds}, {}, EvalProtocol(ssim="y"), torch.device("cpu"), out,
                             with_input=True, log=None, page=page)


# ---------------------------------------------------------------------------------------------- no browser
def test_safe_stem_keeps_spaces_and_unicode():
    assert safe_stem("café #2") == "café #2"
    assert safe_stem("a/b\\c:d*e?f\"g<h>i|j") == "a_b_c_d_e_f_g_h_i_j"
    assert safe_stem(" .. ") == "image"
    assert len(safe_stem("é" * 200).encode()) <= 150


def test_page_writer_files_json_escaping_and_lazy(tmp_path):
    folder = tmp_path / "rés ults" / "set ü"
    page = ComparisonPage(folder, "set ü", ["Net A", "B<x>"], main="Net A")
    names = ["img 1", "café #2", "x<y>&z", "img 1"]  # the duplicate name must not overwrite the first
    rng = np.random.default_rng(0)
    gts = []
    for i, name in enumerate(names):
        lq = torch.from_numpy(rng.random((1, 3, 30, 600 if i == 0 else 40), dtype=np.float32))
        gt = torch.from_numpy(rng.random((1, 3, 30, 600 if i == 0 else 40), dtype=np.float32))
        gts.append(gt)
        batch = {"lq": lq, "gt": gt, "name": [name]}
        for k, label in enumerate(["Net A", "B<x>", "input"]):
            out = lq if label == "input" else (lq * (k + 1)).clamp(0, 1)
            row = {"name": name, "psnr": 20.0 + i + k, "ssim": 0.5, "lpips": float("nan")}
            page.hook(label)(i, batch, out, row)
    index = page.write({"images": 4, "psnr": 21.0, "ssim": 0.5, "network": "Net A",
                        "Net A": {"images": 4, "psnr": 21.0}, "B<x>": {"images": 4, "psnr": 22.0},
                        "input": {"images": 4, "psnr": 20.0}}, {"psnr": "RGB <range 1>", "ssim": "SSIM on Y"})
    assert index == folder / "index.html" and index.is_file()
    assert page.seconds > 0
    text = index.read_text(encoding="utf-8")
    data = page_data(index)

    # every picture written once per column, full size and thumbnail; the duplicate name got its own stem
    stems = [unquote(r["stem"]) for r in data["rows"]]
    assert stems[:3] == ["img 1", "café #2", "x_y_&z"] and stems[3] not in stems[:3]
    assert page.dirs == {"input": "_input", "gt": "_gt", "Net A": "Net A", "B<x>": "B_x_"}
    for col in ("_input", "Net A", "B_x_", "_gt"):
        for stem in stems:
            assert (folder / "page" / "full" / col / f"{stem}.png").is_file()
            assert (folder / "page" / "thumbs" / col / f"{stem}.jpg").is_file()
    # full size is lossless (8-bit of the tensor); thumbnails at most 256 px on the long side
    full = read_image(folder / "page" / "full" / "_gt" / "img 1.png")
    assert full.shape == (30, 600, 3)
    assert np.abs(full - gts[0][0].permute(1, 2, 0).numpy()).max() <= 0.5 / 255 + 1e-6
    thumb = read_image(folder / "page" / "thumbs" / "Net A" / "img 1.jpg")
    assert thumb.shape[:2] == (13, 256)

    # the data: metrics per column (NaN as null), names as given, the JSON cannot close its <script>
    assert [r["name"] for r in data["rows"]] == names
    assert data["rows"][2]["m"]["B<x>"] == {"psnr": 23.0, "ssim": 0.5, "lpips": None}
    assert data["rows"][0]["m"]["input"]["psnr"] == 22.0
    block = text.split('id="page-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in block
    # links URL-encoded in the data, labels HTML-escaped, thumbnails sized and lazy
    assert [c["dir"] for c in data["columns"]] == ["_input", "Net%20A", "B_x_", "_gt"]
    assert data["rows"][1]["stem"] == "caf%C3%A9%20%232" and data["rows"][2]["stem"] == "x_y_%26z"
    assert [(r["tw"], r["th"]) for r in data["rows"]] == [(256, 13), (40, 30), (40, 30), (40, 30)]
    assert "<th>B&lt;x&gt;<br>" in text and "B<x>" not in text.split("<script")[0]
    script = text.rsplit("<script>", 1)[1]
    make_img = script[script.index('el("img"'):]
    assert make_img.index('loading: "lazy"') < make_img.index("src:")  # lazy set before the source
    # summary with the protocol, sort buttons per metric and column, the compare dialog
    assert "RGB &lt;range 1&gt;" in text and "<h2>Metric protocol</h2>" in text
    assert 'data-col="B&lt;x&gt;" data-metric="psnr"' in text
    assert 'id="diff-sort"' in text and '<dialog id="compare">' in text
    assert "http://" not in text and "https://" not in text  # nothing from a CDN


def test_evaluate_datasets_page_next_to_per_image_csv(tmp_path):
    out = tmp_path / "out ä"
    summary = run_page(tmp_path, out)
    ds_dir = out / "set é 1"
    assert (ds_dir / "per_image.csv").is_file() and (ds_dir / "index.html").is_file()
    data = page_data(ds_dir / "index.html")
    evaluated = [row["name"] for row in _csv(ds_dir / "per_image.csv") if row["name"] != "Average"]
    assert [r["name"] for r in data["rows"]] == evaluated and sorted(evaluated) == sorted(NAMES)
    assert [c["key"] for c in data["columns"]] == ["input", "Net A", "B×3", "gt"]
    for r in data["rows"]:  # the page's metrics are the evaluation's
        assert set(r["m"]) == {"input", "Net A", "B×3"}
    main_rows = [row for row in _csv(ds_dir / "per_image.csv") if row["name"] != "Average"]
    assert [r["m"]["Net A"]["psnr"] for r in data["rows"]] == pytest.approx([r["psnr"] for r in main_rows], abs=1e-5)
    assert summary["set é 1"]["Net A"]["images"] == len(NAMES)
    assert len(list((ds_dir / "page" / "full").rglob("*.png"))) == 4 * len(NAMES)
    # no page asked for: nothing written
    run_page(tmp_path / "again", tmp_path / "plain", page=False)
    assert not (tmp_path / "plain" / "set é 1" / "index.html").exists()
    assert not (tmp_path / "plain" / "set é 1" / "page").exists()


def _csv(path: Path) -> list[dict[str, Any]]:
    """per_image.csv rows, numbers as floats (empty cells None)."""
    with path.open(encoding="utf-8") as fh:
        return [{k: v if k == "name" else float(v) if v else None for k, v in r.items()} for r in csv.DictReader(fh)]


def test_eval_cli_html_flag(tmp_path):
    make_set(tmp_path / "my set ü", n=3)
    torch.manual_seed(0)
    ckpt = tmp_path / "unet.pth"
    torch.save({"params": build_network("UNet", width=4).state_dict()}, ckpt)
    out = tmp_path / "out"
    base = ["-n", "UNet", "-w", str(ckpt), "--network-args", '{"width": 4}', "-d", str(tmp_path / "my set ü"),
            "--device", "cpu", "--workers", "0", "--no-lpips", "-o", str(out)]
    assert eval_cli.build_parser().parse_args(base).html is False
    assert eval_cli.main([*base, "--html"]) == 0
    index = out / "my set ü" / "index.html"
    assert index.is_file() and (out / "my set ü" / "per_image.csv").is_file()
    assert len(page_data(index)["rows"]) == 3


def test_reproduce_passes_html_through(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("reproduce_tables", ROOT / "scripts/reproduce_tables.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.build_parser().parse_args(["--checkpoints", "x", "--html"]).html is True
    assert script.build_parser().parse_args(["--checkpoints", "x"]).html is False
    torch.save({"params": build_network("UNet", width=4).state_dict()}, tmp_path / "UNet_baseline.pth")
    seen: list[bool] = []
    monkeypatch.setattr(reproduce_mod, "evaluate_datasets", lambda *a, **k: seen.append(k.get("page")) or {})
    cfg = reproduce_mod.ReproduceConfig(checkpoints=tmp_path, data_root=str(tmp_path / "none"), out=tmp_path / "o",
                                        network_args={"UNet": {"width": 4}}, device="cpu", lpips=False, html=True)
    reproduce_mod.reproduce(cfg)
    assert seen == [True]


# ---------------------------------------------------------------------------------------------- in a browser
def many_rows_page(folder: Path, n: int) -> Path:
    """A page of ``n`` tiny images ``p 00``... of one network ``N`` whose PSNR falls with the index."""
    page = ComparisonPage(folder, "many", ["N"])
    for i in range(n):
        img = torch.full((1, 3, 12, 16), i / n)
        page.hook("N")(i, {"lq": img, "gt": img, "name": [f"p {i:02d}"]}, img, {"name": f"p {i:02d}", "psnr": 50.0 - i})
    return page.write()


def _browser_or_skip() -> Any:
    """Selenium's webdriver module, or a skip naming what is missing and how to install it."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if importlib.util.find_spec("selenium") is None:
        missing.append("the selenium package")
    if missing:
        pytest.skip(f"headless browser check skipped: {', '.join(missing)} missing (install with "
                    f"'apt-get install -y chromium chromium-driver' and 'pip install selenium')")
    from selenium import webdriver
    return webdriver


def test_page_in_headless_chromium(tmp_path):
    webdriver = _browser_or_skip()
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    out = tmp_path / "résultats 1"
    run_page(tmp_path, out)
    index = out / "set é 1" / "index.html"
    data = page_data(index)

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1000"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)
    try:
        driver.set_page_load_timeout(60)
        driver.get(index.as_uri())  # file:// with the space and the unicode characters percent-encoded
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
        assert "set é 1" in driver.title

        def names() -> list[str]:
            return driver.execute_script(
                "return Array.from(document.querySelectorAll('#rows tbody tr td.name b')).map(b => b.textContent)")

        def loaded(selector: str) -> bool:
            return driver.execute_script(
                "return Array.from(document.querySelectorAll(arguments[0]))"
                ".every(i => i.complete && i.naturalWidth > 0)", selector)

        evaluated = [r["name"] for r in data["rows"]]
        assert names() == evaluated
        thumbs = driver.execute_script("return Array.from(document.querySelectorAll('#rows img.thumb'))"
                                       ".map(i => [i.loading, i.getAttribute('width') !== null])")
        assert thumbs == [["lazy", True]] * (4 * len(NAMES))
        wait.until(lambda d: loaded("#rows tbody tr:first-child img.thumb"))  # encoded links resolve

        # sort by a metric of one network: ascending, then descending on the second click
        psnr = {r["name"]: r["m"]["B×3"]["psnr"] for r in data["rows"]}
        button = driver.find_element(By.CSS_SELECTOR, 'button.sort[data-col="B×3"][data-metric="psnr"]')
        button.click()
        assert names() == sorted(NAMES, key=psnr.get) != evaluated
        assert button.get_attribute("aria-sort") == "ascending"
        button.click()
        assert names() == sorted(NAMES, key=psnr.get, reverse=True)

        # sort by the difference of SSIM between two columns; the differences are shown
        ssim = {r["name"]: r["m"]["Net A"]["ssim"] - r["m"]["input"]["ssim"] for r in data["rows"]}
        Select(driver.find_element(By.ID, "diff-metric")).select_by_value("ssim")
        Select(driver.find_element(By.ID, "diff-a")).select_by_value("Net A")
        Select(driver.find_element(By.ID, "diff-b")).select_by_value("input")
        driver.find_element(By.ID, "diff-sort").click()
        assert names() == sorted(NAMES, key=ssim.get)
        first_delta = driver.find_element(By.CSS_SELECTOR, "#rows tbody tr:first-child td.delta")
        assert first_delta.is_displayed() and float(first_delta.text) == pytest.approx(min(ssim.values()), abs=1e-4)
        driver.save_screenshot(str(tmp_path / "page.png"))

        # compare: two full-size pictures of one row at the same spot, a slider and a toggle between them
        row = driver.find_element(By.CSS_SELECTOR, "#rows tbody tr:first-child")
        row_name = row.find_element(By.CSS_SELECTOR, "td.name b").text
        row.find_element(By.CSS_SELECTOR, "button.cmp").click()
        dialog = driver.find_element(By.ID, "compare")
        assert dialog.get_attribute("open") is not None
        wait.until(lambda d: loaded("#cmp-stage img"))
        a_src = driver.find_element(By.ID, "cmp-a").get_attribute("src")
        b_src = driver.find_element(By.ID, "cmp-b").get_attribute("src")
        assert a_src.endswith(f"/page/full/Net%20A/{quote(row_name)}.png")
        assert b_src.endswith(f"/page/full/_gt/{quote(row_name)}.png")
        boxes = driver.execute_script("return ['cmp-a', 'cmp-b'].map(id => { const r = document.getElementById(id)"
                                      ".getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })")
        assert boxes[0] == boxes[1] and boxes[0][2] > 0  # the same spot
        clip = lambda: driver.execute_script("return document.getElementById('cmp-b').style.clipPath")
        assert clip() == "inset(0px 0px 0px 50%)"
        slider = driver.find_element(By.ID, "cmp-split")
        slider.send_keys(Keys.END)
        assert slider.get_attribute("value") == "100" and clip() == "inset(0px 0px 0px 100%)"
        driver.find_element(By.ID, "cmp-toggle").click()
        assert clip() == "inset(0px 0px 0px 0%)"
        Select(driver.find_element(By.ID, "cmp-b-col")).select_by_value("input")
        wait.until(lambda d: loaded("#cmp-stage img"))
        assert driver.find_element(By.ID, "cmp-b").get_attribute("src").endswith(f"/_input/{quote(row_name)}.png")
        size = lambda: driver.execute_script("const a = document.getElementById('cmp-a');"
                                             "return [a.width, a.height, a.naturalWidth, a.naturalHeight];")
        w, h, nw, nh = size()
        assert w > nw and h > nh and abs(w / h - nw / nh) < 0.05  # small pictures fit the window
        driver.find_element(By.ID, "cmp-native").click()
        assert size()[:2] == [nw, nh]  # 1:1
        driver.find_element(By.ID, "cmp-native").click()
        slider.send_keys(Keys.HOME)
        for _ in range(40):
            slider.send_keys(Keys.RIGHT)
        driver.save_screenshot(str(tmp_path / "compare.png"))
        driver.find_element(By.ID, "cmp-close").click()
        assert dialog.get_attribute("open") is None
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe

        # a longer set is drawn a page at a time; sorting starts again on the first page
        big = many_rows_page(tmp_path / "many ü", 60)
        driver.get(big.as_uri())
        wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
        assert len(names()) == 60
        Select(driver.find_element(By.ID, "per-page")).select_by_value("25")
        assert names() == [f"p {i:02d}" for i in range(25)]
        assert driver.find_element(By.ID, "range").text == "rows 1–25 of 60"
        driver.find_element(By.ID, "next").click()
        assert names()[0] == "p 25" and driver.find_element(By.ID, "range").text == "rows 26–50 of 60"
        driver.find_element(By.CSS_SELECTOR, 'button.sort[data-col="N"][data-metric="psnr"]').click()
        assert names() == [f"p {i:02d}" for i in range(59, 34, -1)]  # PSNR falls with the index
        wait.until(lambda d: loaded("#rows tbody tr:first-child img.thumb"))
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe
    finally:
        driver.quit()
    for shot in ("page.png", "compare.png"):
        assert (tmp_path / shot).stat().st_size > 10_000
    print(f"screenshots: {tmp_path / 'page.png'} {tmp_path / 'compare.png'}")
