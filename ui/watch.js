// The page's watcher (a gr.HTML outside the tabs, ui/page.py): once a second it asks the server, in one
// plain POST (the server function `changed`, which skips Gradio's queue), whether anything this visitor's
// page shows has changed: their model, their run, the class board. Only then does it fire `refresh`,
// the page's poll through the queue, which updates the model picker and the Train tab. Globals: `element`,
// `props` (value: {visitor}; seconds), `server`, `trigger`, `watch`.
let visitor = props.value?.visitor ?? null; // set by the page's load (start_session)
let key = null; // the server's summary of what this page shows, as of the last refresh
let asking = false;

watch("value", () => {
  visitor = props.value?.visitor ?? visitor;
});

async function check() {
  if (!visitor || asking) return; // one question at a time: a slow server is not asked twice
  asking = true;
  try {
    const answer = await server.changed({ visitor, key });
    if (answer && typeof answer.key === "string" && answer.key !== key) {
      key = answer.key;
      trigger("refresh");
    }
  } catch (error) {
    // the server restarted or the network blinked: the next tick asks again
  } finally {
    asking = false;
  }
}

setInterval(check, 1000 * (Number(props.seconds) || 1));
