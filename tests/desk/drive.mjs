// Drives one headless Chromium (Debian's) for tests/agent_desk.rs: one JSON command per line on
// stdin, one JSON answer per line on stdout ({"ok": true, "value": …} or {"ok": false, "error"}).
// Each page is a browser tab with its own context (own fake microphone, own storage).
//
//   {"op": "open", "tab": "a", "url": "http://…/agent"}   a new tab ("insecure": true for a test CA)
//   {"op": "fill", "tab": "a", "sel": "#user", "text": "1003"}
//   {"op": "click", "tab": "a", "sel": "#answer"}         waits until it is enabled
//   {"op": "wait", "tab": "a", "sel": "#phone", "text": "已注册", "timeout": 10000}
//   {"op": "eval", "tab": "a", "js": "…expression…"}      the value of an async expression
//   {"op": "close", "tab": "a"}                            closes the tab (its WebSocket too)
//   {"op": "quit"}
// Options: argv[2] = the fake microphone WAV file.
import { chromium } from "playwright-core";
import readline from "node:readline";

const tone = process.argv[2];
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    ...(tone ? ["--use-file-for-fake-audio-capture=" + tone] : []),
    "--autoplay-policy=no-user-gesture-required", "--allow-loopback-in-peer-connection",
  ],
});
const tabs = new Map();

async function run(cmd) {
  const tab = tabs.get(cmd.tab);
  const timeout = cmd.timeout ?? 15000;
  switch (cmd.op) {
    case "open": {
      // "insecure": the test's own CA is not in Chromium's store (HTTPS tests).
      const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, ignoreHTTPSErrors: !!cmd.insecure });
      const page = await context.newPage();
      page.on("console", (m) => process.stderr.write(`[${cmd.tab} console] ${m.text()}\n`));
      page.on("pageerror", (e) => process.stderr.write(`[${cmd.tab} error] ${e}\n`));
      await page.goto(cmd.url);
      tabs.set(cmd.tab, { context, page });
      return null;
    }
    case "fill":
      await tab.page.fill(cmd.sel, cmd.text, { timeout });
      return null;
    case "click":
      await tab.page.click(cmd.sel, { timeout });
      return null;
    case "wait":
      await tab.page.waitForFunction(
        ([sel, text]) => { const e = document.querySelector(sel); return e && e.textContent.includes(text); },
        [cmd.sel, cmd.text], { timeout, polling: 100 });
      return await tab.page.textContent(cmd.sel);
    case "text":
      return await tab.page.textContent(cmd.sel, { timeout });
    case "eval":
      return await tab.page.evaluate(cmd.js);
    case "screenshot":
      await tab.page.screenshot({ path: cmd.path });
      return null;
    case "close":
      await tab.context.close();
      tabs.delete(cmd.tab);
      return null;
    case "quit":
      await browser.close();
      process.stdout.write(JSON.stringify({ ok: true, value: null }) + "\n");
      process.exit(0);
    default:
      throw new Error("unknown op " + cmd.op);
  }
}

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  let answer;
  try {
    answer = { ok: true, value: await run(JSON.parse(line)) };
  } catch (e) {
    answer = { ok: false, error: String(e && e.message ? e.message : e) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
}
await browser.close();
