// OpenPose editor: the body of gr.HTML's js_on_load (element, trigger, props, watch).
// Plain JavaScript, no libraries. The pose is the studio's OpenPose JSON (pixels on the
// canvas): {canvas_width, canvas_height, people: [{pose_keypoints_2d, hand_left_keypoints_2d,
// hand_right_keypoints_2d, face_keypoints_2d}]}, flat [x, y, confidence] triplets, 0 = absent.
// Every finished edit sets props.value to the JSON and triggers "input": the server checks
// it, draws the ControlNet map and fills the JSON box. A value from the server (a preview, the
// JSON box's re-render) is loaded here through watch("value").

const PARTS = ["pose_keypoints_2d", "hand_left_keypoints_2d", "hand_right_keypoints_2d",
               "face_keypoints_2d"];
// COCO-18 limbs (controlnet_aux's limbSeq, 0-based) and OpenPose's colours per limb/joint.
const LIMBS = [[1, 2], [1, 5], [2, 3], [3, 4], [5, 6], [6, 7], [1, 8], [8, 9], [9, 10],
               [1, 11], [11, 12], [12, 13], [1, 0], [0, 14], [14, 16], [0, 15], [15, 17]];
const COLOURS = [[255, 0, 0], [255, 85, 0], [255, 170, 0], [255, 255, 0], [170, 255, 0],
                 [85, 255, 0], [0, 255, 0], [0, 255, 85], [0, 255, 170], [0, 255, 255],
                 [0, 170, 255], [0, 85, 255], [0, 0, 255], [85, 0, 255], [170, 0, 255],
                 [255, 0, 255], [255, 0, 170], [255, 0, 85]];
const HAND_EDGES = [[0, 1], [1, 2], [2, 3], [3, 4], [0, 5], [5, 6], [6, 7], [7, 8], [0, 9],
                    [9, 10], [10, 11], [11, 12], [0, 13], [13, 14], [14, 15], [15, 16],
                    [0, 17], [17, 18], [18, 19], [19, 20]];
// Left/right twins of the COCO-18 body points and of the 70 face points (as mirror_person).
const BODY_MIRROR = [0, 1, 5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10, 15, 14, 17, 16];
const FACE_MIRROR = (() => {
  const r = (a, b) => { const out = []; for (let i = a; i >= b; i--) out.push(i); return out; };
  return [...r(16, 0), ...r(26, 17), 27, 28, 29, 30, ...r(35, 31),
          45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40, ...r(54, 48), ...r(59, 55),
          ...r(64, 60), 67, 66, 65, 69, 68];
})();
// A standing person, normalised to a 1 x 1 box (COCO-18 order).
const DEFAULT_BODY = [[0.5, 0.1], [0.5, 0.22], [0.4, 0.23], [0.34, 0.37], [0.3, 0.5],
                      [0.6, 0.23], [0.66, 0.37], [0.7, 0.5], [0.44, 0.53], [0.43, 0.72],
                      [0.42, 0.9], [0.56, 0.53], [0.57, 0.72], [0.58, 0.9], [0.47, 0.08],
                      [0.53, 0.08], [0.44, 0.1], [0.56, 0.1]];
const MAX_UNDO = 100;
const DRAW_SIDE = 768;  // the editor canvas's longest side in device pixels

const canvas = element.querySelector("canvas.pose-canvas");
const ctx = canvas.getContext("2d");
const status = element.querySelector(".pose-status");
const fileInput = element.querySelector("input.pose-file");
let pose = null;      // the pose being edited
let selected = -1;    // index of the selected person
let drag = null;      // {kind: "point" | "person", person, part, index, last: [x, y], moved}
let sent = "";        // the JSON this editor last sent or loaded
const undoStack = [];
let lastSize = [512, 512];  // the last pose's canvas: an empty editor keeps it

const round2 = (v) => Math.round(v * 100) / 100;
const clone = (p) => JSON.parse(JSON.stringify(p));

function emptyPose(width, height) {
  return {canvas_width: width || 512, canvas_height: height || 512, people: []};
}

function isNormalised(p) {
  // the A1111 editor's rule: every present coordinate at most 1 in size
  let any = false;
  for (const person of p.people) {
    for (const part of PARTS) {
      const flat = person[part] || [];
      for (let i = 0; i + 2 < flat.length; i += 3) {
        if (flat[i + 2] <= 0) continue;
        if (Math.abs(flat[i]) > 1 || Math.abs(flat[i + 1]) > 1) return false;
        any = true;
      }
    }
  }
  return any;
}

function parsePose(text) {
  // OpenPose JSON text -> the editor's pose (pixels, every part a list); null when unusable.
  let data;
  try { data = JSON.parse(text); } catch (e) { return null; }
  if (!data || typeof data !== "object" || !Array.isArray(data.people)) return null;
  const p = emptyPose(Number(data.canvas_width) || 512, Number(data.canvas_height) || 512);
  p.people = data.people.filter((x) => x && typeof x === "object").map((person) => {
    const out = {};
    for (const part of PARTS) out[part] = Array.isArray(person[part]) ? person[part].slice() : [];
    return out;
  });
  if (isNormalised(p)) {
    for (const person of p.people) {
      for (const part of PARTS) {
        const flat = person[part];
        for (let i = 0; i + 2 < flat.length; i += 3) {
          flat[i] = round2(flat[i] * p.canvas_width);
          flat[i + 1] = round2(flat[i + 1] * p.canvas_height);
        }
      }
    }
  }
  return p;
}

function poseText(p) {
  const out = {canvas_width: p.canvas_width, canvas_height: p.canvas_height, people: []};
  for (const person of p.people) {
    const q = {};
    for (const part of PARTS) q[part] = person[part].map(round2);
    out.people.push(q);
  }
  return JSON.stringify(out);
}

function close(a, b) {
  // same pose up to rounding (the server rewrites the JSON it gets back in 2 decimals)
  if (!a || !b || a.canvas_width !== b.canvas_width || a.canvas_height !== b.canvas_height ||
      a.people.length !== b.people.length) return false;
  return a.people.every((person, i) => PARTS.every((part) => {
    const x = person[part], y = b.people[i][part];
    return x.length === y.length && x.every((v, j) => Math.abs(v - y[j]) < 0.05);
  }));
}

// ------------------------------------------------------------------------------ drawing
function points(person, part) {
  const flat = person[part], out = [];
  for (let i = 0; i + 2 < flat.length; i += 3) {
    out.push(flat[i + 2] > 0 ? [flat[i], flat[i + 1]] : null);
  }
  return out;
}

function bounds(person) {
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const part of PARTS) {
    for (const pt of points(person, part)) {
      if (!pt) continue;
      x0 = Math.min(x0, pt[0]); y0 = Math.min(y0, pt[1]);
      x1 = Math.max(x1, pt[0]); y1 = Math.max(y1, pt[1]);
    }
  }
  return x0 === Infinity ? null : [x0, y0, x1, y1];
}

function draw() {
  const p = pose || emptyPose(lastSize[0], lastSize[1]);
  lastSize = [p.canvas_width, p.canvas_height];
  // drawn at a fixed resolution whatever the pose's canvas (a 128 px pose stays sharp)
  const k = DRAW_SIDE / Math.max(p.canvas_width, p.canvas_height);
  const bw = Math.round(p.canvas_width * k), bh = Math.round(p.canvas_height * k);
  if (canvas.width !== bw) canvas.width = bw;
  if (canvas.height !== bh) canvas.height = bh;
  ctx.setTransform(k, 0, 0, k, 0, 0);
  const unit = Math.max(p.canvas_width, p.canvas_height) / 256;  // line width per 256 px
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, p.canvas_width, p.canvas_height);
  p.people.forEach((person, n) => {
    const body = points(person, "pose_keypoints_2d");
    ctx.lineWidth = 3 * unit;
    LIMBS.forEach(([a, b], i) => {
      if (!body[a] || !body[b]) return;
      ctx.strokeStyle = `rgba(${COLOURS[i].join(",")},0.6)`;
      ctx.beginPath(); ctx.moveTo(...body[a]); ctx.lineTo(...body[b]); ctx.stroke();
    });
    body.forEach((pt, i) => dot(pt, 3 * unit, `rgb(${COLOURS[i].join(",")})`));
    for (const part of ["hand_left_keypoints_2d", "hand_right_keypoints_2d"]) {
      const hand = points(person, part);
      ctx.lineWidth = unit;
      ctx.strokeStyle = "#ff9a00";
      HAND_EDGES.forEach(([a, b]) => {
        if (!hand[a] || !hand[b]) return;
        ctx.beginPath(); ctx.moveTo(...hand[a]); ctx.lineTo(...hand[b]); ctx.stroke();
      });
      hand.forEach((pt) => dot(pt, 1.5 * unit, "#3b6cff"));
    }
    points(person, "face_keypoints_2d").forEach((pt) => dot(pt, 1.2 * unit, "#fff"));
    const box = n === selected && bounds(person);
    if (box) {
      ctx.setLineDash([4 * unit, 3 * unit]);
      ctx.strokeStyle = "#fff";
      ctx.lineWidth = unit;
      const pad = 6 * unit;
      ctx.strokeRect(box[0] - pad, box[1] - pad, box[2] - box[0] + 2 * pad,
                     box[3] - box[1] + 2 * pad);
      ctx.setLineDash([]);
    }
  });
  element.dataset.people = String(p.people.length);
  element.dataset.selected = String(selected);
  status.textContent = pose ? `${p.people.length} person(s) on ${p.canvas_width} x ` +
    `${p.canvas_height}` + (selected >= 0 ? `; person ${selected + 1} selected` : "")
    : "No pose yet: preview a photo with openpose, import a JSON, or add a person.";
}

function dot(pt, r, colour) {
  if (!pt) return;
  ctx.fillStyle = colour;
  ctx.beginPath(); ctx.arc(pt[0], pt[1], r, 0, 2 * Math.PI); ctx.fill();
}

// ------------------------------------------------------------------------------ editing
function commit() {
  // a finished edit: the server draws the map and updates the JSON box
  draw();
  sent = poseText(pose);
  props.value = sent;
  setTimeout(() => trigger("input"), 0);  // after the value has reached the app's state
}

function remember() {
  undoStack.push(pose ? clone(pose) : null);
  if (undoStack.length > MAX_UNDO) undoStack.shift();
}

function undo() {
  if (!undoStack.length) return;
  pose = undoStack.pop();
  if (!pose) pose = emptyPose(lastSize[0], lastSize[1]);
  selected = Math.min(selected, pose.people.length - 1);
  commit();
}

function transform(person, fn) {
  // apply fn(x, y) -> [x, y] to every present point of a person
  for (const part of PARTS) {
    const flat = person[part];
    for (let i = 0; i + 2 < flat.length; i += 3) {
      if (flat[i + 2] <= 0) continue;
      const [x, y] = fn(flat[i], flat[i + 1]);
      flat[i] = x; flat[i + 1] = y;
    }
  }
}

function centre(person) {
  const b = bounds(person);
  return b ? [(b[0] + b[2]) / 2, (b[1] + b[3]) / 2] : [0, 0];
}

function mirror(person) {
  // swap left and right, then flip x about the person's centre (as mirror_person)
  const [cx] = centre(person);
  const reorder = (flat, twins) => {
    const triplets = [];
    for (let i = 0; i + 2 < flat.length; i += 3) triplets.push(flat.slice(i, i + 3));
    const ordered = twins && twins.length === triplets.length
      ? twins.map((j) => triplets[j]) : triplets;
    return [].concat(...ordered);
  };
  const out = {
    pose_keypoints_2d: reorder(person.pose_keypoints_2d, BODY_MIRROR),
    hand_left_keypoints_2d: person.hand_right_keypoints_2d.slice(),
    hand_right_keypoints_2d: person.hand_left_keypoints_2d.slice(),
    face_keypoints_2d: reorder(person.face_keypoints_2d, FACE_MIRROR),
  };
  transform(out, (x, y) => [2 * cx - x, y]);
  return out;
}

function scale(person, factor) {
  const [cx, cy] = centre(person);
  transform(person, (x, y) => [cx + (x - cx) * factor, cy + (y - cy) * factor]);
}

function defaultPerson(p) {
  const h = 0.8 * p.canvas_height, w = Math.min(h, 0.9 * p.canvas_width);
  const x0 = (p.canvas_width - w) / 2, y0 = (p.canvas_height - h) / 2;
  return {
    pose_keypoints_2d: [].concat(...DEFAULT_BODY.map(([x, y]) =>
      [round2(x0 + x * w), round2(y0 + y * h), 1])),
    hand_left_keypoints_2d: [], hand_right_keypoints_2d: [], face_keypoints_2d: [],
  };
}

const ACTIONS = {
  add() {
    pose = pose || emptyPose(lastSize[0], lastSize[1]);
    pose.people.push(defaultPerson(pose));
    selected = pose.people.length - 1;
  },
  remove() { pose.people.splice(selected, 1); selected = -1; },
  mirror() { pose.people[selected] = mirror(pose.people[selected]); },
  bigger() { scale(pose.people[selected], 1.1); },
  smaller() { scale(pose.people[selected], 1 / 1.1); },
};

function act(name) {
  if (name === "undo") return undo();
  if (name === "import") return fileInput.click();
  if (name === "export") return exportJson();
  if (name !== "add" && !(pose && pose.people[selected])) {
    status.textContent = "Select a person first: click one of its points.";
    return;
  }
  remember();
  ACTIONS[name]();
  commit();
}

function exportJson() {
  const blob = new Blob([pose ? poseText(pose) : poseText(emptyPose(lastSize[0], lastSize[1]))],
                        {type: "application/json"});
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = "pose.json";
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

// ------------------------------------------------------------------------------ pointer
function toCanvas(ev) {
  const r = canvas.getBoundingClientRect();
  return [(ev.clientX - r.left) * pose.canvas_width / r.width,
          (ev.clientY - r.top) * pose.canvas_height / r.height];
}

function hit(x, y) {
  // the nearest point within 10 screen pixels: {person, part, index}
  const reach = screenReach();
  let best = null, bestD = reach * reach;
  (pose ? pose.people : []).forEach((person, n) => {
    for (const part of PARTS) {
      points(person, part).forEach((pt, index) => {
        if (!pt) return;
        const d = (pt[0] - x) ** 2 + (pt[1] - y) ** 2;
        if (d <= bestD) { bestD = d; best = {person: n, part, index}; }
      });
    }
  });
  return best;
}

function screenReach() {
  // 10 screen pixels in pose pixels
  return 10 * pose.canvas_width / canvas.getBoundingClientRect().width;
}

function inside(n, x, y) {
  const b = pose && pose.people[n] && bounds(pose.people[n]), m = b && screenReach();
  return b && x >= b[0] - m && x <= b[2] + m && y >= b[1] - m && y <= b[3] + m;
}

canvas.addEventListener("pointerdown", (ev) => {
  if (!pose) return;
  canvas.focus();
  const [x, y] = toCanvas(ev);
  const h = hit(x, y);
  if (h && !ev.shiftKey) {
    drag = {kind: "point", ...h, last: [x, y], moved: false};
    selected = h.person;
  } else if (h || inside(selected, x, y)) {
    selected = h ? h.person : selected;
    drag = {kind: "person", person: selected, last: [x, y], moved: false};
  } else {
    selected = -1;
  }
  if (drag) canvas.setPointerCapture(ev.pointerId);
  draw();
});

canvas.addEventListener("pointermove", (ev) => {
  if (!drag) return;
  const [x, y] = toCanvas(ev);
  if (!drag.moved) { remember(); drag.moved = true; }
  const person = pose.people[drag.person];
  if (drag.kind === "point") {
    const flat = person[drag.part];
    flat[3 * drag.index] = Math.min(Math.max(x, 0), pose.canvas_width - 1);
    flat[3 * drag.index + 1] = Math.min(Math.max(y, 0), pose.canvas_height - 1);
  } else {
    const [dx, dy] = [x - drag.last[0], y - drag.last[1]];
    transform(person, (px, py) => [px + dx, py + dy]);
  }
  drag.last = [x, y];
  draw();
});

function endDrag() {
  if (drag && drag.moved) commit();
  drag = null;
}
canvas.addEventListener("pointerup", endDrag);
canvas.addEventListener("pointercancel", endDrag);

let wheelTimeout = null;
canvas.addEventListener("wheel", (ev) => {
  if (!(pose && pose.people[selected])) return;  // scroll the page as usual
  ev.preventDefault();
  if (wheelTimeout === null) remember();  // one undo step and one commit per wheel gesture
  scale(pose.people[selected], ev.deltaY < 0 ? 1.05 : 1 / 1.05);
  draw();
  clearTimeout(wheelTimeout);
  wheelTimeout = setTimeout(() => { wheelTimeout = null; commit(); }, 300);
}, {passive: false});

element.addEventListener("keydown", (ev) => {
  if ((ev.ctrlKey || ev.metaKey) && ev.key.toLowerCase() === "z") {
    ev.preventDefault();
    undo();
  } else if ((ev.key === "Delete" || ev.key === "Backspace") && ev.target === canvas) {
    ev.preventDefault();
    act("remove");
  }
});

element.querySelectorAll("button[data-action]").forEach((button) => {
  button.addEventListener("click", () => act(button.dataset.action));
});

fileInput.addEventListener("change", async () => {
  const file = fileInput.files && fileInput.files[0];
  fileInput.value = "";
  if (!file) return;
  // the server checks the file and sends the pose back (or says what is wrong);
  // the editor's pose changes only when it is accepted
  sent = await file.text();  // not loaded here (see load): the server's answer is
  props.value = sent;
  setTimeout(() => trigger("input"), 0);
});

// ------------------------------------------------------------------------------ from the server
function load() {
  const text = props.value || "";
  if (text === sent) return;
  const incoming = text.trim() ? parsePose(text) : null;
  if (text.trim() && !incoming) return;  // not a pose: keep editing what is here
  if (!close(incoming, pose)) {
    if (pose) remember();
    selected = -1;
  }
  pose = incoming;
  sent = text;
  draw();
}

watch("value", load);
load();
draw();
