"""The web form in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright; no
browser download), against a real server socket and a real worker process."""

from __future__ import annotations

import base64
import time
import zipfile
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from portrait.samples import write_sample_photos

from helpers_service import live_server, make_app, worker_process

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    return write_sample_photos(tmp_path_factory.mktemp("samples"))


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).exists(), "Debian's chromium is needed (apt-get install chromium)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


@pytest.fixture
def served(tmp_path):
    data = tmp_path / "data"
    app = make_app(data, web_refresh_seconds=1)
    with live_server(app) as url, worker_process(data):
        yield url


def _save_screenshot(page, tmp_path: Path, name: str) -> Path:
    """In the test's own temp folder, never the source tree: pytest keeps the last three runs' folders
    (/tmp/pytest-of-$USER/pytest-current/<test>/) for a person to look at."""
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    return shot


def _wait_until(page, condition, timeout: float = 300.0) -> None:
    """Poll from Python (the form's Content-Security-Policy forbids the eval behind wait_for_function)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the page never reached the expected state"
        page.wait_for_timeout(100)


def _drop_file(page, path: Path) -> None:
    """A real drop event on the drop zone, carrying the file (what a drag from the desktop does)."""
    page.evaluate("""([name, b64]) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], name, {type: 'image/jpeg'}));
        const zone = document.getElementById('drop');
        zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: dt, bubbles: true, cancelable: true}));
        zone.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""", [path.name, base64.b64encode(path.read_bytes()).decode()])


@pytest.mark.slow
def test_upload_follow_progress_and_gallery(served, browser, samples, tmp_path):
    context = browser.new_context(viewport={"width": 1200, "height": 900}, accept_downloads=True)
    context.set_default_timeout(300_000)  # a loaded 2-core machine; a guard, not a speed target
    page = context.new_page()
    response = page.goto(served + "/")
    assert page.title() == "portrait"
    assert "script-src 'self'" in response.headers["content-security-policy"]
    violations, errors = [], []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    page.on("pageerror", lambda e: errors.append(str(e)))  # an exception in form.js would stop its polling

    _drop_file(page, samples[0])  # drag and drop ...
    junk = tmp_path / "notes.jpg"
    junk.write_text("this is not a photo")
    page.set_input_files("#photos-input", [str(p) for p in samples[1:]] + [str(junk)])  # ... and the picker
    _wait_until(page, lambda: len(page.query_selector_all("#photo-list li.ok, #photo-list li.bad")) == 11)
    rows = {li.get_attribute("data-file"): li for li in page.query_selector_all("#photo-list li")}
    assert all("ok" in rows[p.name].get_attribute("class") for p in samples)
    assert "bad" in rows["notes.jpg"].get_attribute("class")
    assert "unreadable" in rows["notes.jpg"].inner_text()

    # templates from their thumbnails: only studio-grey
    for box in page.query_selector_all('input[name="templates"]:checked'):
        box.uncheck()
    page.click('label.tpl:has(input[value="studio-grey"]) img')
    assert page.eval_on_selector_all('input[name="templates"]:checked', "els => els.map(e => e.value)") == \
        ["studio-grey"]
    img = 'label.tpl:has(input[value="studio-grey"]) img'
    page.query_selector(img).scroll_into_view_if_needed()  # thumbnails load lazily, as they come into view
    _wait_until(page, lambda: page.eval_on_selector(img, "i => i.complete && i.naturalWidth > 0"), timeout=30)

    page.click("#start")
    page.wait_for_selector("#progress:not([hidden])")
    seen, labels = [], set()
    deadline = time.monotonic() + 300  # a guard: a form that stops following fails here, it does not hang
    while "/jobs/" not in page.url:
        assert time.monotonic() < deadline, ("the form never opened the gallery", page.url, seen[-3:], labels,
                                             errors, page.inner_text("#form-error"))
        try:  # queries that do not wait: the form page may be gone between the URL check and the query
            bar, label = page.query_selector("#bar"), page.query_selector("#stage-label")
            if bar is None or label is None:
                break
            seen.append(float(bar.evaluate("b => b.value")))
            labels.add(label.inner_text())
        except Exception:  # the page is navigating to the gallery
            break
        page.wait_for_timeout(100)
    page.wait_for_url("**/jobs/**")
    page.wait_for_selector("#gallery img")
    assert seen == sorted(seen), "the progress bar went backwards"
    assert labels - {"queued"}, labels  # it showed the job's stages

    # the gallery: one portrait with its likeness score; the verdicts, with the reference marked
    assert page.get_attribute("#job", "data-state") == "succeeded", page.inner_text("#job")
    figures = page.query_selector_all("#gallery figure")
    assert len(figures) == 1 and "studio-grey" in figures[0].inner_text()
    score = float(figures[0].query_selector(".score").inner_text())
    assert 0.0 <= score <= 1.0
    assert page.eval_on_selector("#gallery img", "i => i.complete && i.naturalWidth") > 0
    verdicts = {li.get_attribute("data-file"): li.inner_text() for li in page.query_selector_all("#verdicts li")}
    assert "different_person" in verdicts["grace_hopper.jpg"]
    assert "the same photo as astronaut_" in verdicts["astronaut_09_copy.jpg"] + verdicts["astronaut_01.jpg"]
    assert sum("reference" in v for v in verdicts.values()) == 1
    assert violations == []
    shot = _save_screenshot(page, tmp_path, "web-gallery.png")
    assert shot.stat().st_size > 10_000

    # downloads: one image, and all as a zip
    with page.expect_download() as one:
        page.click("#gallery figcaption a[download]")
    assert one.value.suggested_filename.endswith(".png")
    with page.expect_download() as all_:
        page.click("#download-all")
    with zipfile.ZipFile(all_.value.path()) as zf:
        assert [n for n in zf.namelist() if n.endswith(".png")] == ["01-studio-grey.png"]

    # another visitor (another session) cannot see this job, nor post without a CSRF token
    other = browser.new_context().new_page()
    r = other.goto(page.url)
    assert r.status == 404
    r = other.request.post(served + "/identities", data="{}", headers={"Content-Type": "application/json"})
    assert r.status == 400 and r.json()["error"]["code"] == "csrf_failed"
    context.close()


@pytest.mark.slow
def test_without_javascript_the_status_page_refreshes_to_the_gallery(served, browser, samples, tmp_path):
    context = browser.new_context(java_script_enabled=False)
    context.set_default_timeout(300_000)
    page = context.new_page()
    page.goto(served + "/")
    page.set_input_files("#photos-input", [str(p) for p in samples[:8]])
    page.click("#start")
    assert "/jobs/" in page.url
    # The page refreshes itself every second, so a DOM read can land mid-navigation on an empty
    # document: wait until some loaded document has the refresh tag (or the finished gallery).
    page.wait_for_selector('meta[http-equiv="refresh"], #gallery', state="attached", timeout=60_000)
    # reached by the page's own refreshes; a finished job's page has no refresh tag, so it then stays put
    page.wait_for_selector('#job[data-state="succeeded"]', state="attached", timeout=600_000)
    assert page.query_selector('meta[http-equiv="refresh"]') is None
    assert len(page.query_selector_all("#gallery figure img")) == 2  # the two templates checked by default
    _save_screenshot(page, tmp_path, "web-gallery-nojs.png")
    context.close()


@pytest.mark.slow
def test_gallery_filters_by_tag_and_suggest_for_me_runs_without_javascript(served, browser, samples, tmp_path):
    """Tag links narrow the gallery (plain links: no JavaScript needed), and "Suggest
    for me" sends auto:3, which renders the three templates chosen for these photos."""
    from portrait.templates import list_templates

    context = browser.new_context(java_script_enabled=False)
    context.set_default_timeout(300_000)
    page = context.new_page()
    page.goto(served + "/")
    assert len(page.query_selector_all("#templates .tpl")) == len(list_templates())
    page.click("#tag-filter >> text=bw")
    shown = [e.get_attribute("data-tags").split() for e in page.query_selector_all("#templates .tpl")]
    assert shown and all("bw" in tags for tags in shown)
    assert len(shown) == sum("bw" in t.tags for t in list_templates())
    page.click("#tag-filter >> text=studio")  # a second tag: both
    shown = [e.get_attribute("data-tags").split() for e in page.query_selector_all("#templates .tpl")]
    assert shown and all({"bw", "studio"} <= set(tags) for tags in shown)
    _save_screenshot(page, tmp_path, "web-tags.png")
    page.goto(served + "/")
    for box in page.query_selector_all('#templates input[name="templates"]:checked'):
        box.uncheck()
    page.check("#suggest")
    page.set_input_files("#photos-input", [str(p) for p in samples[:8]])
    page.click("#start")
    page.wait_for_selector('meta[http-equiv="refresh"], #gallery', state="attached", timeout=60_000)
    page.wait_for_selector('#job[data-state="succeeded"]', state="attached", timeout=600_000)
    assert len(page.query_selector_all("#gallery figure img")) == 3
    context.close()


def test_operator_password_gate(tmp_path, browser):
    app = make_app(tmp_path / "data", web_auth="password", web_password="s3cret")
    with live_server(app) as url:
        page = browser.new_context().new_page()
        page.goto(url + "/")
        assert "/login" in page.url and page.query_selector("#start") is None
        page.fill('input[name="secret"]', "wrong")
        page.click('button[type="submit"]')
        assert page.inner_text("#login-error")
        page.fill('input[name="secret"]', "s3cret")
        page.click('button[type="submit"]')
        page.wait_for_selector("#start")  # the form, once the page after the redirect has loaded
        assert "/login" not in page.url


@pytest.mark.slow
def test_cancel_from_the_status_page(tmp_path, browser, samples):
    """No worker runs here, so the job waits in the queue until the visitor cancels it."""
    app = make_app(tmp_path / "data", web_refresh_seconds=30)
    with live_server(app) as url:
        page = browser.new_context(java_script_enabled=False).new_page()
        page.goto(url + "/")
        page.set_input_files("#photos-input", [str(p) for p in samples[:5]])
        page.click("#start")
        assert page.get_attribute("#job", "data-state") == "queued"
        # No worker has a fresh heartbeat: the page says so, not "Jobs ahead of yours: 0" forever.
        assert "No worker is running" in page.inner_text("#queue-hint")
        from server.worker import Worker

        svc = app.extensions["portrait"]
        w = Worker(svc.settings, service=svc)
        w.register()  # a worker appears (registered, not claiming): the queue position shows
        page.reload()
        assert "Jobs ahead of yours: 0" in page.inner_text("#queue-hint")
        w.unregister()
        page.click("#cancel")
        assert page.get_attribute("#job", "data-state") == "cancelled"
        assert page.query_selector('meta[http-equiv="refresh"]') is None


@pytest.mark.slow
def test_a_job_with_too_few_photos_says_how_many_to_add_and_retries_with_them(tmp_path, browser, samples):
    """The failure page names no code or server path, says how many photos to add, keeps the good ones and
    runs the same template again with the added ones, without JavaScript."""
    from server.worker import Worker

    app = make_app(tmp_path / "data", web_refresh_seconds=30)
    person = [p for p in samples if p.name.startswith("astronaut_")]
    with live_server(app) as url:
        page = browser.new_context(java_script_enabled=False).new_page()
        page.goto(url + "/")
        page.set_input_files("#photos-input", [str(p) for p in person[:2]])
        page.click("#start")
        first = page.get_attribute("#job", "data-id")
        svc = app.extensions["portrait"]
        assert Worker(svc.settings, service=svc).run_forever(max_jobs=1) == 1
        page.reload()
        assert page.get_attribute("#job", "data-state") == "failed"
        advice = page.inner_text("#retry-advice")
        assert "Add 2 more photos of the same person" in advice and "Your 2 good photos stay" in advice
        assert str(tmp_path) not in page.inner_text("#job")
        page.set_input_files("#retry-photos", [str(p) for p in person[2:5]])
        page.click("#retry")
        assert page.get_attribute("#job", "data-state") == "queued"
        second = page.get_attribute("#job", "data-id")
        assert second != first
        with svc.db.session() as s:
            from server.db.models import Job, Photo

            row = s.get(Job, second)
            assert row.templates == s.get(Job, first).templates  # the same template again
            assert s.query(Photo).filter(Photo.identity_id == row.identity_id).count() == 5  # 2 kept + 3 added
            assert row.identity_id == s.get(Job, first).identity_id


@pytest.fixture
def served_with_tiny_models(tmp_path, tiny_models_dir):
    """The server and a worker whose models folder holds the tiny random diffusion set (SD 1.5, ControlNets,
    a dlib-sized FaceID adapter): what a GPU server with the real weights runs, small."""
    data = tmp_path / "data"
    app = make_app(data, web_refresh_seconds=1)
    with live_server(app) as url, worker_process(data, env={"PORTRAIT_MODELS_DIR": str(tiny_models_dir)}):
        yield url


@pytest.mark.slow
@pytest.mark.parametrize("javascript", [True, False])
def test_the_new_scene_tab_makes_pictures_from_a_style(served_with_tiny_models, browser, samples, tmp_path,
                                                       javascript):
    """The "New scene" tab: a style instead of templates, the photos embedded by the job (train-free), N
    pictures back ranked. CSS alone switches the panels, so the form works without JavaScript too."""
    context = browser.new_context(java_script_enabled=javascript, viewport={"width": 1200, "height": 900})
    context.set_default_timeout(300_000)
    page = context.new_page()
    page.goto(served_with_tiny_models + "/")
    assert page.is_visible("#templates-panel") and not page.is_visible("#scene-panel")
    page.check("#mode-scene")
    assert page.is_visible("#scene-panel") and not page.is_visible("#templates-panel")
    styles = page.eval_on_selector_all('#styles input[name="styles"]', "els => els.map(e => e.value)")
    assert {"vintage-film", "watercolour", "astronaut"} <= set(styles)
    for box in page.query_selector_all('#styles input[name="styles"]:checked'):
        box.uncheck()
    page.check('#styles input[value="watercolour"]')
    page.select_option("#count", "2")
    page.set_input_files("#photos-input", [str(p) for p in samples[:6]])
    if javascript:
        _wait_until(page, lambda: len(page.query_selector_all("#photo-list li.ok, #photo-list li.bad")) == 6)
    _save_screenshot(page, tmp_path, f"web-scene-form-{javascript}.png")
    page.click("#start")
    page.wait_for_selector("#job", state="attached", timeout=60_000)
    page.wait_for_selector('#job[data-state="succeeded"], #job[data-state="failed"]', state="attached",
                           timeout=600_000)
    assert page.get_attribute("#job", "data-state") == "succeeded", page.inner_text("#job")
    figures = page.query_selector_all("#gallery figure")
    assert len(figures) == 2 and all("watercolour" in f.inner_text() for f in figures)
    # random tiny models draw no face: the caption says so rather than "likeness 0.00"
    assert all("no face found" in f.inner_text() for f in figures)
    assert page.eval_on_selector("#gallery img", "i => i.complete && i.naturalWidth") > 0
    _save_screenshot(page, tmp_path, f"web-scene-gallery-{javascript}.png")
    context.close()
