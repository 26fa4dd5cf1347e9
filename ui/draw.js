// MNIST Studio's drawing surface: the js_on_load of a gr.HTML component (ui/draw.py).
// Gradio runs this once per page with `element` (the component's root), `props` (its value and template
// props: side, brush, empty), `server` (its server functions) and `watch` (called when Python sets the
// value). It reads nothing of Gradio's own page: only the elements of ui/draw.html.
const canvas = element.querySelector("#draw-canvas");
const context = canvas.getContext("2d");
const SIDE = canvas.width;
const BRUSH = Number(canvas.dataset.brush);

let strokes = []; // finished strokes, each a list of [x, y] in canvas pixels
let undone = []; // strokes taken back by Undo, for Redo
let current = null; // the stroke being drawn: {id, points}
let seq = props.value?.seq ?? 0; // number of the latest drawing sent; older answers are dropped
let visitor = props.value?.visitor ?? null; // who draws: the page's visitor id, set by the page's load
let own = props.value?.own ?? ""; // the panel of the visitor's own labelled digits (HTML from the server)

function paint() {
  context.fillStyle = "#ffffff";
  context.fillRect(0, 0, SIDE, SIDE);
  for (const points of strokes) paintStroke(points);
  if (current) paintStroke(current.points);
}

function paintStroke(points) {
  context.beginPath();
  context.moveTo(points[0][0], points[0][1]);
  for (const [x, y] of points.slice(1)) context.lineTo(x, y);
  if (points.length === 1) context.lineTo(points[0][0] + 0.01, points[0][1]);
  context.stroke();
}

function setBrush() {
  context.strokeStyle = "#000000";
  context.lineWidth = BRUSH;
  context.lineCap = "round";
  context.lineJoin = "round";
}

// A point in canvas pixels, whatever size CSS shows the canvas at (a phone shows it at ~340 px).
function at(event) {
  const box = canvas.getBoundingClientRect();
  const x = ((event.clientX - box.left) * SIDE) / box.width;
  const y = ((event.clientY - box.top) * SIDE) / box.height;
  return [Math.round(x * 10) / 10, Math.round(y * 10) / 10];
}

function extend(point) {
  const points = current.points;
  const [lx, ly] = points[points.length - 1];
  if (Math.hypot(point[0] - lx, point[1] - ly) < 1) return; // sub-pixel moves add nothing
  points.push(point);
  context.beginPath();
  context.moveTo(lx, ly);
  context.lineTo(point[0], point[1]);
  context.stroke();
}

canvas.addEventListener("pointerdown", (event) => {
  if (current || (event.pointerType === "mouse" && event.button !== 0)) return; // one pen at a time
  event.preventDefault();
  canvas.focus({ preventScroll: true });
  canvas.setPointerCapture(event.pointerId);
  current = { id: event.pointerId, points: [at(event)] };
  paintStroke(current.points);
});

canvas.addEventListener("pointermove", (event) => {
  if (!current || event.pointerId !== current.id) return;
  // Coalesced events: the points a fast pen passed between two frames.
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const each of events.length ? events : [event]) extend(at(each));
});

function endStroke(event) {
  if (!current || event.pointerId !== current.id) return;
  strokes.push(current.points);
  current = null;
  undone = [];
  send();
}
canvas.addEventListener("pointerup", endStroke);
canvas.addEventListener("pointercancel", endStroke);
canvas.addEventListener("lostpointercapture", endStroke);

function undo() {
  if (!strokes.length) return;
  undone.push(strokes.pop());
  paint();
  send();
}

function redo() {
  if (!undone.length) return;
  strokes.push(undone.pop());
  paint();
  send();
}

function clear() {
  if (!strokes.length && !undone.length) return;
  strokes = [];
  undone = [];
  paint();
  send();
}

const whyBox = element.querySelector("#why-toggle");
whyBox.addEventListener("change", () => strokes.length && send()); // the answer again, with or without why

element.querySelector("#draw-undo").addEventListener("click", undo);
element.querySelector("#draw-redo").addEventListener("click", redo);
element.querySelector("#draw-clear").addEventListener("click", clear);
canvas.addEventListener("keydown", (event) => {
  const key = event.key.toLowerCase();
  if (/^[0-9]$/.test(key) && !(event.ctrlKey || event.metaKey || event.altKey)) {
    event.preventDefault();
    label(Number(key)); // "that is a 7", typed
    return;
  }
  if (!(event.ctrlKey || event.metaKey)) return;
  if (key === "z" && !event.shiftKey) undo();
  else if (key === "y" || (key === "z" && event.shiftKey)) redo();
  else return;
  event.preventDefault();
});

function show(html, source = "sketch") {
  props.value = { seq, source, visitor, own, strokes: strokes.map((points) => points.slice()), html };
}

function showOwn(html) {
  own = html;
  props.value = { ...props.value, own };
}

// "That is a 7": the drawing on the canvas joins the visitor's own digits, and the canvas clears for the
// next one. Only while the canvas holds a drawing whose answer is shown.
async function label(digit) {
  if (!strokes.length || labelling) return;
  labelling = true;
  const drawing = strokes.map((points) => points.slice());
  let answer;
  try {
    answer = await server.label_drawing({ seq, strokes: drawing, visitor, label: digit });
  } catch (error) {
    console.error("MNIST Studio: the drawing could not be added", error);
  } finally {
    labelling = false;
  }
  if (answer?.own) showOwn(answer.own);
  if (answer?.ok && answer.seq === seq) {
    strokes = [];
    undone = [];
    paint();
    send();
  }
}
let labelling = false;

async function ownAction(name, message) {
  let answer;
  try {
    answer = await server[name]({ ...message, visitor });
  } catch (error) {
    console.error(`MNIST Studio: ${name} failed`, error);
  }
  if (answer?.own) showOwn(answer.own);
}

// The label buttons and the set's buttons come and go with the server's HTML: one listener for all.
element.addEventListener("click", (event) => {
  const button = event.target.closest("button");
  if (!button || !element.contains(button)) return;
  if (button.dataset.label !== undefined) label(Number(button.dataset.label));
  else if (button.dataset.delete !== undefined) ownAction("delete_drawing", { id: Number(button.dataset.delete) });
  else if (button.dataset.clear !== undefined) ownAction("clear_drawings", {});
});

// One message per change of the drawing; only the answer to the latest one is shown.
async function send() {
  const mine = ++seq;
  const drawing = strokes.map((points) => points.slice());
  if (!drawing.length) show(props.empty); // nothing to wait for: the empty state at once
  let answer;
  try {
    answer = await server.classify_strokes({ seq: mine, strokes: drawing, visitor, why: whyBox.checked });
  } catch (error) {
    answer = { seq: mine, html: props.empty };
    console.error("MNIST Studio: the drawing could not be read", error);
  }
  if (answer?.seq === mine && mine === seq) show(answer.html);
}

// Python set the value (a photo's answer, or the answer again after a model change): if the drawing has
// changed since that value was made, its answer is stale; ask again.
watch("value", () => {
  const value = props.value;
  if (value?.visitor && value.visitor !== visitor) {
    visitor = value.visitor;
    ownAction("own_set", {}); // the set this visitor already has (after a reload, say)
  }
  if (typeof value?.own === "string") own = value.own;
  if (value?.source === "sketch" && value.seq !== seq) send();
});

setBrush();
paint();
