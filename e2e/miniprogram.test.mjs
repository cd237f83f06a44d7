// The mini-program sample's page logic under Node, with a fake `wx` and a scripted service: what the
// buyer is shown while an order settles. No WeChat DevTools needed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import vm from 'node:vm';

const PAGE = new URL('../examples/miniprogram/pages/index/index.js', import.meta.url);

/** Loads the page with `answers` as the service's successive answers to GET /orders/{n}. */
function loadPage(answers) {
  const asked = [];
  const api = {
    call: async (path, method) => {
      asked.push(`${method} ${path}`);
      return answers.length > 1 ? answers.shift() : answers[0];
    },
    newKey: () => 'tap-test',
  };
  let definition;
  const toasts = [];
  const sandbox = {
    require: (name) => {
      assert.match(name, /utils\/api$/);
      return api;
    },
    Page: (def) => { definition = def; },
    getApp: () => ({ globalData: {} }),
    wx: { showToast: ({ title }) => toasts.push(title) },
    // The page waits between polls; here it does not.
    setTimeout: (fn) => setTimeout(fn, 0),
    console,
    Date,
    Number,
    Promise,
  };
  vm.runInNewContext(readFileSync(PAGE, 'utf8'), sandbox, { filename: PAGE.pathname });
  const shown = [];
  const page = Object.assign(Object.create(definition), {
    data: {},
    setData(patch) {
      Object.assign(this.data, patch);
      if (patch.current) shown.push({ status: patch.current.status, note: patch.current.note });
    },
  });
  return { page, shown, asked, toasts };
}

const order = (status, extra = {}) => ({
  orderNumber: 'ORD1796180000000Ab3x', status, amount: '12.00', refundAmount: '0.00',
  createdAt: '2026-12-02T04:00:00Z', ...extra,
});

test('after a failed top-up the page keeps watching until the money is back, and says so', async () => {
  const { page, shown, toasts } = loadPage([
    order('recharging'), order('failed'), order('refunding', { refundAmount: '12.00' }),
    order('refunded', { refundAmount: '12.00' }),
  ]);
  const last = await page.poll('ORD1796180000000Ab3x');
  assert.equal(last.status, 'refunded');
  assert.deepEqual(shown.map((s) => s.status), ['recharging', 'failed', 'refunding', 'refunded']);
  assert.match(shown[1].note, /on its way back/);
  assert.match(shown[2].note, /on its way back/);
  assert.match(shown[3].note, /money is back/);
  assert.deepEqual(toasts, []);
});

test('a delivered order refunded in part shows the part that came back', async () => {
  const { page, shown } = loadPage([order('success', { refundAmount: '5.00' })]);
  await page.poll('ORD1796180000000Ab3x');
  assert.equal(shown.length, 1);
  assert.match(shown[0].note, /¥5\.00 refunded/);
});

test('an unresolved top-up is shown as being confirmed, not as failed', async () => {
  const { page, shown } = loadPage([order('unresolved'), order('success')]);
  await page.poll('ORD1796180000000Ab3x');
  assert.match(shown[0].note, /not confirmed yet/);
  assert.equal(shown.at(-1).status, 'success');
});
