// node approve.mjs PAGE_URL TOKEN REQUEST_ID approve|deny|refused
//
// Opens the approver page in headless Chromium (CHROMIUM, default /usr/bin/chromium), pastes
// TOKEN, waits for REQUEST_ID to be listed and clicks its button. `approve`/`deny` expect the
// decision to be confirmed and the row to leave the list; `refused` expects the page to show
// the API's refusal and the row to stay. Exit code 0 when the page behaved as expected.
import { chromium } from "playwright-core";

const [url, token, id, expect] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // Root in CI containers: Chromium's sandbox needs user namespaces it may not get there.
  args: ["--no-sandbox"],
});
try {
  const page = await browser.newPage();
  await page.goto(url);
  // Before a token, the page cannot know whether anything waits, and must not say nothing does.
  await page.locator("#error").filter({ hasText: "Paste an approver token" }).waitFor({ timeout: 10000 });
  if (await page.locator("#empty").isVisible()) throw new Error("'No pending requests.' shown before a token");
  await page.fill("#token", token);
  await page.click("#login button");
  const row = page.locator(`#pending tr[data-id="${id}"]`);
  await row.waitFor({ timeout: 10000 });
  const policy = await row.locator("td").nth(3).textContent();
  const reason = policy.split(": ")[1]?.split(/\d+ of /)[0];
  if (reason && policy.split(reason).length > 2) throw new Error(`the policy cell repeats its reason: ${policy}`);
  const verb = expect === "deny" ? "deny" : "approve";
  await row.locator(".reason").fill(`clicked in the browser (${verb})`);
  await row.locator(`button.${verb}`).click();
  if (expect === "refused") {
    await page.locator("#error").filter({ hasText: id }).waitFor({ timeout: 10000 });
    console.log("refused:", await page.locator("#error").textContent());
    if ((await row.count()) !== 1) throw new Error("the row left the list after a refusal");
  } else {
    await page.locator("#notice").filter({ hasText: id }).waitFor({ timeout: 10000 });
    console.log("decided:", await page.locator("#notice").textContent());
    await row.waitFor({ state: "detached", timeout: 10000 });
  }
} finally {
  await browser.close();
}
