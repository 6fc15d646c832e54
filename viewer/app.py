"""The page: a viser server showing the model as splats, the training cameras, a view's photo to click on.

viser (https://github.com/nerfstudio-project/viser, 1.x) renders Gaussian splats in the browser with WebGL,
so the CPU only serves arrays; it sends GUI events (buttons, dropdowns, scene clicks and shift-drag boxes
as world rays / canvas rectangles) to Python callbacks, which run in viser's thread pool. A run is started
in its own thread; its log lines, warnings and one-line errors go to the page's status line, log panel and
notifications as well as to the terminal.

Prompting: pick a view; the browser camera moves to that training camera and the view's photo is drawn on
a rectangle in front of it (viewer.geometry.PhotoPlane), so a click's ray meets the photo at the pixel
under the cursor, whatever the window's size or aspect. Click: a point on the object (or, with "Click
adds: negative" or Ctrl held, a point that is not the object); Shift+drag: a box.
"""
from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from typing import Any, Callable, Optional

import numpy as np

from utils.errors import UserError, os_error_line
from viewer import geometry
from viewer.scene_data import SHOW_MODES, label_colours
from viewer.session import Session

INSTALL = 'pip install -e ".[viewer]"'
PHOTO_MAX_SIDE = 1600     # longest side of the photo texture sent to the browser (coordinates use the file's)
LOG_LINES = 12            # log lines kept on the page
FRUSTUM_SCALE = 0.3       # frustum depth (and the photo's distance) in camera spacings (geometry.camera_spacing)
STATUS_READY = "ready"


def require_viser() -> Any:
    """The viser module (major version 1), or a one-line UserError naming the install command."""
    try:
        import viser
    except ImportError:
        raise UserError(f"view.py needs viser, the viewer's optional dependency; {INSTALL}") from None
    major = str(getattr(viser, "__version__", "0")).split(".")[0]
    if major != "1":
        raise UserError(f"view.py needs viser 1.x (installed: {getattr(viser, '__version__', '?')}); {INSTALL}")
    return viser


def _resized(img: np.ndarray, max_side: int) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    s = max_side / max(h, w)
    if s >= 1.0:
        return img
    return cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def draw_prompt(photo: np.ndarray, file_size: tuple[int, int], prompt: Any) -> np.ndarray:
    """The photo (any size, showing the whole file) with the prompt drawn: green points on the object, red
    points off it, a yellow box. photo: [h, w, 3] uint8; coordinates are file pixels."""
    import cv2

    out = np.ascontiguousarray(photo.copy())
    sx, sy = out.shape[1] / file_size[0], out.shape[0] / file_size[1]
    r = max(2, round(0.012 * max(out.shape[:2])))

    def at(x: float, y: float) -> tuple[int, int]:
        return round((x + 0.5) * sx), round((y + 0.5) * sy)

    for pts, colour in ((prompt.points, (40, 220, 40)), (prompt.negatives, (230, 40, 40))):
        for x, y in pts:
            cv2.circle(out, at(x, y), r + 1, (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(out, at(x, y), r, colour, -1, cv2.LINE_AA)
    if prompt.box is not None:
        x0, y0, x1, y1 = prompt.box
        cv2.rectangle(out, (round(x0 * sx), round(y0 * sy)), (round((x1 + 1) * sx) - 1, round((y1 + 1) * sy) - 1),
                      (250, 210, 30), max(1, r // 2), cv2.LINE_AA)
    return out


class ViewerApp:
    """One viser server over one :class:`Session` (any number of browser tabs share it)."""

    def __init__(self, session: Session, host: str = "127.0.0.1", port: int = 8080, log: Callable[[str], None] = print):
        viser = require_viser()
        self.session = session
        self._print = log
        self._lock = threading.RLock()
        self._log_lines: deque[str] = deque(maxlen=LOG_LINES)
        self._busy: Optional[str] = None
        cams = session.views.cameras
        self.names = [c.image_name for c in cams]
        self.spacing = geometry.camera_spacing(cams)
        self.server = viser.ViserServer(host=host, port=port, label="gs-segment", verbose=False)
        self.server.scene.set_up_direction(tuple(geometry.scene_up(cams)))
        self._build_gui()
        self._build_scene()
        self.server.on_client_connect(self._on_connect)
        self.set_status(STATUS_READY)

    # ----- page layout ------------------------------------------------------------------------------
    def _build_gui(self) -> None:
        gui, s = self.server.gui, self.session
        self.status = gui.add_markdown("")
        with gui.add_folder("Scene"):
            self.show = gui.add_dropdown("Show", SHOW_MODES, initial_value=SHOW_MODES[0])
            self.colour = gui.add_checkbox("Label colours", False)
            self.frusta = gui.add_checkbox("Cameras", True)
            self.summary = gui.add_markdown(self._summary_text())
        with gui.add_folder("Prompt"):
            self.view = gui.add_dropdown("View", self.names, initial_value=self.names[0])
            self.photo_on = gui.add_checkbox("Photo", True)
            self.mode = gui.add_dropdown("Click adds", ("positive", "negative"), initial_value="positive")
            gui.add_markdown("Click the photo: a point on the object (Ctrl+click: not the object); "
                             "Shift+drag: a box.")
            self.granularity = gui.add_dropdown("Granularity", ("whole", "part"), initial_value="whole")
            self.prompt_text = gui.add_markdown(f"prompt: {s.prompt.describe()}")
            self.segment_button = gui.add_button("Segment")
            self.clear_button = gui.add_button("Clear prompt")
            self.thumb = gui.add_image(np.zeros((8, 8, 3), np.uint8), label="photo")
        with gui.add_folder("Export"):
            self.out_text = gui.add_text("Folder", str(s.out))
            self.export_button = gui.add_button("Export")
        self.log_text = gui.add_markdown("")

        self.show.on_update(lambda _: self.draw_splats())
        self.colour.on_update(lambda _: self.draw_splats())
        self.frusta.on_update(lambda _: self._set_frusta_visible())
        self.view.on_update(lambda _: self.pick_view(self.view.value))
        self.photo_on.on_update(lambda _: self._photo_visible())
        self.granularity.on_update(lambda _: setattr(self.session, "granularity", self.granularity.value))
        self.segment_button.on_click(lambda _: self.start(self.session.run, "segmenting", self._after_run))
        self.clear_button.on_click(lambda _: self._clear())
        self.export_button.on_click(lambda _: self.start(lambda log: self.session.export(self.out_text.value, log),
                                                         "exporting", self._after_export))

    def _build_scene(self) -> None:
        scene = self.server.scene
        self.splat_node = None
        self.frustum_nodes = []
        for i, cam in enumerate(self.session.views.cameras):
            wxyz, pos = geometry.camera_pose(cam)
            node = scene.add_camera_frustum(f"/cameras/{i}", fov=cam.FoVy, aspect=cam.width / cam.height,
                                            scale=FRUSTUM_SCALE * self.spacing, thickness=1.5,
                                            thickness_units="screen", color=(90, 90, 90), wxyz=wxyz, position=pos)
            node.on_click(lambda ev, name=cam.image_name: self._frustum_clicked(name))
            self.frustum_nodes.append(node)
        self.photo_node = None
        self.plane: Optional[geometry.PhotoPlane] = None
        self.draw_splats()
        self.pick_view(self.names[0], move_camera=False)
        scene.on_click()(lambda ev: self._click(ev, self.mode.value == "positive"))
        scene.on_click(modifier="cmd/ctrl")(lambda ev: self._click(ev, False))
        scene.on_rect_select(modifier="shift")(self._box)

    # ----- status, log, notifications ---------------------------------------------------------------
    def set_status(self, text: str) -> None:
        self.status_value = text
        self.status.content = f"**status:** {text}"

    def log(self, line: str) -> None:
        self._print(line)
        self._log_lines.append(line)
        shown = "\n".join(ln if len(ln) < 240 else ln[:237] + "..." for ln in self._log_lines)
        self.log_text.content = f"```\n{shown}\n```"

    def notify(self, title: str, body: str, error: bool = False) -> None:
        for client in self.server.get_clients().values():
            client.add_notification(title, body, color="red" if error else "green", auto_close_seconds=None
                                    if error else 6.0, with_close_button=True)

    def user_error(self, message: str) -> None:
        """A problem the user can fix, shown as one line (and printed)."""
        self.log(f"error: {message}")
        self.set_status(f"error: {message}")
        self.notify("error", message, error=True)

    # ----- runs -------------------------------------------------------------------------------------
    def start(self, job: Callable[..., Any], what: str, done: Callable[[Any], None]) -> None:
        """Run ``job(log=...)`` in a thread: a ticking status while it runs, errors as one line on the page."""
        with self._lock:
            if self._busy is not None:
                self.user_error(f"{self._busy} is in progress; wait for it to finish")
                return
            self._busy = what
        t0 = time.monotonic()
        finished = threading.Event()

        def tick() -> None:
            while not finished.wait(1.0):
                self.set_status(f"{what}... {time.monotonic() - t0:.0f} s (log below)")

        def work() -> None:
            try:
                self.set_status(f"{what}...")
                result = job(log=self.log)
            except UserError as e:
                self.user_error(str(e).strip().splitlines()[0])
            except OSError as e:
                self.user_error(os_error_line(e))
            except Exception as e:  # noqa: BLE001 - a bug: shown on the page, traceback in the terminal
                self._print(traceback.format_exc())
                self.user_error(f"internal error ({type(e).__name__}: {str(e)[:160]}); please report it (the "
                                "traceback is in the terminal)")
            else:
                done(result)
            finally:
                finished.set()
                with self._lock:
                    self._busy = None

        threading.Thread(target=tick, daemon=True).start()
        threading.Thread(target=work, daemon=True, name=f"view-{what}").start()

    @property
    def busy(self) -> Optional[str]:
        return self._busy

    def _after_run(self, seg: Any) -> None:
        summary = self.session.result_summary or {}
        g = summary.get("gaussians", {})
        text = f"done: selected {g.get('extracted', 0):,} of {summary.get('num_gaussians', 0):,} Gaussians"
        self.summary.content = self._summary_text()
        self.photo_on.value = False      # the photo hides the result seen through the view
        self.show.value = "extracted"    # on_update redraws
        self.draw_splats()
        self.set_status(text + " (Export writes them)")
        self.notify("segmented", text)

    def _after_export(self, result: tuple) -> None:
        target, files = result
        self.set_status(f"exported {len(files)} files to {target}")
        self.notify("exported", f"{len(files)} files in {target}")

    # ----- drawing ----------------------------------------------------------------------------------
    def _summary_text(self) -> str:
        seg = self.session.segmentation
        if seg is None:
            return f"{self.session.num_gaussians:,} Gaussians; no segmentation yet (--segmentation DIR, or prompt)"
        where = f" ({seg.source})" if seg.source else " (this page's last run)"
        return f"{self.session.num_gaussians:,} Gaussians: {seg.counts()}{where}"

    def draw_splats(self) -> None:
        with self._lock:
            s, seg = self.session, self.session.segmentation
            show = self.show.value
            if seg is None and (show != SHOW_MODES[0] or self.colour.value):
                self.set_status(f"{show if show != SHOW_MODES[0] else 'label colours'}: no segmentation yet; "
                                "open one with --segmentation DIR or prompt and Segment")
            mask = np.ones(s.num_gaussians, bool) if seg is None else seg.mask(show)
            rgbs = label_colours(seg.labels) if seg is not None and self.colour.value else None
            arr = s.splats.subset(mask, rgbs)
            if self.splat_node is not None:
                self.splat_node.remove()
                self.splat_node = None
            if len(arr):
                self.splat_node = self.server.scene.add_gaussian_splats("/splats", arr.centers, arr.covariances,
                                                                        arr.rgbs, arr.opacities)

    def _set_frusta_visible(self) -> None:
        for node in self.frustum_nodes:
            node.visible = self.frusta.value

    def _photo_visible(self) -> None:
        if self.photo_node is not None:
            self.photo_node.visible = self.photo_on.value

    def _redraw_photo(self) -> None:
        s, plane = self.session, self.plane
        assert plane is not None
        img = draw_prompt(self._photo, plane.file_size, s.prompt if s.prompt.view == self.view.value else
                          type(s.prompt)())
        wxyz, pos = plane.pose()
        w, h = plane.render_size
        self.photo_node = self.server.scene.add_image("/photo", img, w, h, wxyz=wxyz, position=pos,
                                                      visible=self.photo_on.value, cast_shadow=False,
                                                      receive_shadow=False)
        self.thumb.image = _resized(img, 320)
        self.prompt_text.content = f"prompt: {s.prompt.describe()}"

    def pick_view(self, name: str, move_camera: bool = True) -> None:
        """Show a view's photo in front of its camera and move every browser camera there."""
        with self._lock:
            cam = self.session.camera(name)
            self._photo = _resized(self.session.photo(cam), PHOTO_MAX_SIDE)
            self.plane = geometry.PhotoPlane.of(cam, self.session.file_size(cam), FRUSTUM_SCALE * self.spacing)
            for node, c in zip(self.frustum_nodes, self.session.views.cameras):
                node.color = (230, 120, 20) if c.image_name == name else (90, 90, 90)
            if self.view.value != name:
                self.view.value = name
            self.photo_on.value = True
            self._redraw_photo()
        if move_camera:
            for client in self.server.get_clients().values():
                self.look_through(client, cam)

    def look_through(self, client: Any, cam: Any) -> None:
        """Put a browser camera at a training camera (pose and vertical field of view)."""
        wxyz, pos = geometry.camera_pose(cam)
        R = geometry.rotation_of(wxyz)
        with client.atomic():
            client.camera.fov = cam.FoVy
            client.camera.near = min(client.camera.near, 0.05 * self.spacing)
            client.camera.position = pos
            client.camera.look_at = pos + R[:, 2] * 4.0 * self.spacing
            client.camera.up_direction = -R[:, 1]

    def _on_connect(self, client: Any) -> None:
        self.look_through(client, self.session.camera(self.view.value))

    def _frustum_clicked(self, name: str) -> None:
        self.pick_view(name)

    # ----- prompting --------------------------------------------------------------------------------
    def _file_pixel(self, origin: Any, direction: Any) -> tuple[int, int]:
        plane = self.plane
        hit = plane.file_pixel(origin, direction) if plane is not None and self.photo_on.value else None
        if hit is None:
            raise UserError(f"the click is not on the photo of view {self.view.value}; click on the photo "
                            "(tick Photo and pick the view to look through it)")
        return geometry.file_pixel_index(hit[0], hit[1], plane.file_size)

    def _click(self, ev: Any, positive: bool) -> None:
        if self.plane is None or not self.photo_on.value:
            return  # clicks on the 3D scene without the photo do nothing
        try:
            x, y = self._file_pixel(ev.ray_origin, ev.ray_direction)
        except UserError as e:
            self.user_error(str(e))
            return
        with self._lock:
            self.session.prompt.add_point(self.view.value, x, y, positive)
            self._redraw_photo()
        self.set_status(f"prompt: {self.session.prompt.describe()} (Segment runs it)")

    def _box(self, ev: Any) -> None:
        if self.plane is None or not self.photo_on.value:
            return
        cam = ev.client.camera
        (u0, v0), (u1, v1) = ev.screen_min, ev.screen_max
        try:
            pts = [self._file_pixel(*geometry.screen_ray((u, v), cam.position, cam.wxyz, cam.fov, cam.aspect))
                   for u, v in ((u0, v0), (u1, v0), (u0, v1), (u1, v1))]
        except UserError:
            self.user_error(f"the box does not lie on the photo of view {self.view.value}; drag it inside the photo")
            return
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        with self._lock:
            self.session.prompt.set_box(self.view.value, min(xs), min(ys), max(xs), max(ys))
            self._redraw_photo()
        self.set_status(f"prompt: {self.session.prompt.describe()} (Segment runs it)")

    def _clear(self) -> None:
        with self._lock:
            self.session.prompt.clear()
            self._redraw_photo()
        self.set_status("prompt cleared")

    # ----- for tests and the script -----------------------------------------------------------------
    @property
    def url(self) -> str:
        host = self.server.get_host()
        return f"http://{'localhost' if host in ('127.0.0.1', '::1') else host}:{self.server.get_port()}"

    def screen_of_file_pixel(self, client: Any, x: float, y: float) -> Optional[tuple[float, float]]:
        """Canvas coordinates in [0, 1]^2 where file pixel (x, y)'s centre is drawn for this client."""
        if self.plane is None:
            return None
        cam = client.camera
        return geometry.screen_point(self.plane.world_point(x + 0.5, y + 0.5), cam.position, cam.wxyz, cam.fov,
                                     cam.aspect)

    def stop(self) -> None:
        self.server.stop()
