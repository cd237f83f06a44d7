// wxtopup console: a buyer view (place, pay in the sandbox, follow an order) and an operator view
// (reconciliation, statistics, alerts, catalog, orders, history, retry, mark delivered, refund, refund retry).
// Plain DOM, no dependencies.
(function () {
  'use strict';

  // ---------------------------------------------------------------------------------------------
  // Constants

  const POLL_MS = 1000;
  /** A failed order is watched this long for the automatic refund before polling stops. */
  const FAILED_GRACE_MS = 15000;
  /** A settled order is read once more this long after, for the buyer message sent in the background. */
  const TOLD_DELAY_MS = 1500;
  /** Polling pauses when nothing has changed for this long (e.g. a carrier that stays pending). */
  const IDLE_LIMIT_MS = 180000;
  const MAX_POLL_ERRORS = 5;
  const PHONE_RE = /^\+?[0-9]{6,15}$/;
  const STORE = {
    buyer: 'wxtopup.console.buyerId',
    token: 'wxtopup.console.adminToken',
  };

  const ROUTES = {
    success: ['unpaid', 'paid', 'recharging', 'success'],
    failed: ['unpaid', 'paid', 'recharging', 'failed', 'refunding', 'refunded'],
    refundedAfterSuccess: ['unpaid', 'paid', 'recharging', 'success', 'refunding', 'refunded'],
    closed: ['unpaid', 'closed'],
    latePayment: ['unpaid', 'closed', 'refunding', 'refunded'],
    refundUnknown: ['unpaid', 'paid', 'refunding', 'refunded'],
    // The attempt budget ran out without an answer either way: an operator settles it.
    unresolved: ['unpaid', 'paid', 'recharging', 'unresolved'],
    unresolvedDelivered: ['unpaid', 'paid', 'recharging', 'unresolved', 'success'],
    unresolvedRefunded: ['unpaid', 'paid', 'recharging', 'unresolved', 'refunding', 'refunded'],
  };
  /** Statuses whose delivery is still being worked on; the operator detail follows them. */
  const MOVING = ['paid', 'recharging', 'unresolved', 'refunding'];
  /** Orders that can be refunded in part (the rest only whole, or not at all). */
  const PARTIAL_REFUNDABLE = ['success', 'refunded', 'refunding'];
  const UNRESOLVED_EXPLAINED = 'The carrier has not confirmed whether this top-up arrived. ' +
    'It is still being asked; settle it: retry, mark delivered, or refund.';
  const NOTENOUGH_HINT = 'waiting: the merchant\'s WeChat Pay balance is too low';

  // ---------------------------------------------------------------------------------------------
  // Small helpers

  const $ = (id) => document.getElementById(id);

  /** Creates an element. Strings become text nodes, never HTML. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    if (attrs) {
      for (const [key, value] of Object.entries(attrs)) {
        if (value === undefined || value === null || value === false) continue;
        if (key === 'class') el.className = value;
        else if (key === 'text') el.textContent = value;
        else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
        else if (key === 'dataset') Object.assign(el.dataset, value);
        else el.setAttribute(key, value === true ? '' : String(value));
      }
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
    return el;
  }

  /** Scrolls a section into view (on narrow screens, where it sits below what was clicked). */
  function reveal(el) {
    const smooth = !window.matchMedia('(prefers-reduced-motion: reduce)').matches;
    el.scrollIntoView({ behavior: smooth ? 'smooth' : 'auto', block: 'start' });
  }

  // The admin token lives only as long as the tab (sessionStorage); the sandbox buyer id persists.
  function storeFor(key) {
    return key === STORE.token ? window.sessionStorage : window.localStorage;
  }

  function storageGet(key) {
    try { return storeFor(key).getItem(key); } catch (e) { return null; }
  }

  function storageSet(key, value) {
    try {
      if (value === null) storeFor(key).removeItem(key);
      else storeFor(key).setItem(key, value);
    } catch (e) { /* private mode: keep it in memory only */ }
  }

  const dateTimeFormat = new Intl.DateTimeFormat(undefined, {
    year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit',
  });
  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  const preciseFormat = new Intl.DateTimeFormat(undefined, {
    year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit',
    fractionalSecondDigits: 3,
  });

  function parseTime(iso) {
    if (!iso) return null;
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? null : d;
  }

  /** A <time> element in local time, with the original UTC value as its tooltip. */
  function timeEl(iso, format) {
    const d = parseTime(iso);
    if (!d) return h('span', { class: 'muted', text: '—' });
    return h('time', { datetime: iso, title: iso, text: (format || dateTimeFormat).format(d) });
  }

  function yuan(amount) {
    return '¥' + amount;
  }

  function fen(amount) {
    const n = Number(amount);
    return Number.isFinite(n) ? Math.round(n * 100) : 0;
  }

  function statusBadge(status, attrs) {
    return h('span', Object.assign({ class: 'status s-' + status, text: status }, attrs || {}));
  }

  /**
   * How an order can be refunded now: 'any' (whole or in part), 'whole' (all that is left, no amount),
   * or null. Undelivered orders only whole: `unresolved`, and `paid` while nothing was submitted to the
   * carrier (a submit may have reached it otherwise, and the service refuses).
   */
  function refundScope(order) {
    const left = fen(order.amount) - fen(order.refundAmount);
    if (left <= 0) return null;
    if (order.status === 'unresolved') return 'whole';
    if (order.status === 'paid') return order.submitted ? null : 'whole';
    return PARTIAL_REFUNDABLE.includes(order.status) ? 'any' : null;
  }

  function isRefundable(order) {
    return refundScope(order) !== null;
  }

  function remaining(order) {
    return ((fen(order.amount) - fen(order.refundAmount)) / 100).toFixed(2);
  }

  class ApiError extends Error {
    constructor(code, message, status) {
      super(message);
      this.code = code;
      this.status = status || 0;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // State

  const state = {
    config: { development: false, sandbox: false, adminToken: null },
    products: [],
    selectedProduct: null,
    current: null, // { order, seen: [{status, at}] }
    poll: { token: 0, timer: null },
    admin: { page: 1, pageSize: 50, total: 0, selected: null, detailTimer: null, loaded: false },
    stats: { range: null }, // null: the server's default range (the last 7 days)
    alerts: { page: 1, pageSize: 20 },
    catalog: { products: [], changesFor: null },
  };

  // ---------------------------------------------------------------------------------------------
  // API

  function buyerId() {
    return ($('buyer-id').value || '').trim() || 'console-buyer';
  }

  function adminToken() {
    return state.config.adminToken || storageGet(STORE.token) || '';
  }

  async function api(path, options) {
    const opts = options || {};
    const headers = { accept: 'application/json' };
    if (opts.as === 'buyer') headers['X-Mock-Openid'] = buyerId();
    if (opts.as === 'admin') {
      const token = adminToken();
      if (!token) {
        showTokenBox(true);
        throw new ApiError('NO_TOKEN', 'Enter the admin token first.');
      }
      headers.authorization = 'Bearer ' + token;
    }
    const init = { method: opts.method || 'GET', headers, cache: 'no-store' };
    if (opts.body !== undefined) {
      headers['content-type'] = 'application/json';
      init.body = JSON.stringify(opts.body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      throw new ApiError('NETWORK', 'Cannot reach the service (' + (e && e.message ? e.message : 'network error') + ').');
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (e) { data = null; }
    }
    if (!response.ok) {
      const message = data && typeof data.message === 'string' ? data.message : 'HTTP ' + response.status;
      const code = data && typeof data.code === 'string' ? data.code : 'HTTP_' + response.status;
      if (opts.as === 'admin' && response.status === 401) {
        showTokenBox(true);
        throw new ApiError(code, 'The admin token was refused: ' + message, 401);
      }
      throw new ApiError(code, message, response.status);
    }
    return data;
  }

  // ---------------------------------------------------------------------------------------------
  // Notices

  let noticeTimer = null;

  function notify(message, kind) {
    const box = $('notice');
    $('notice-text').textContent = message;
    box.classList.toggle('ok', kind === 'ok');
    box.hidden = false;
    clearTimeout(noticeTimer);
    if (kind === 'ok') noticeTimer = setTimeout(() => { box.hidden = true; }, 4000);
  }

  function fail(error) {
    notify(error && error.message ? error.message : String(error), 'error');
  }

  function clearNotice() {
    $('notice').hidden = true;
  }

  /** Runs an async action with its button disabled, reporting any error. */
  async function busy(button, action) {
    if (button) button.disabled = true;
    try {
      return await action();
    } catch (e) {
      fail(e);
      return undefined;
    } finally {
      if (button) button.disabled = false;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Tabs

  function showView(view) {
    const name = view === 'operator' ? 'operator' : 'buyer';
    for (const tab of document.querySelectorAll('.tab')) {
      tab.setAttribute('aria-selected', String(tab.dataset.view === name));
    }
    $('view-buyer').hidden = name !== 'buyer';
    $('view-operator').hidden = name !== 'operator';
    if (location.hash !== '#' + name) history.replaceState(null, '', '#' + name);
    if (name === 'operator' && !state.admin.loaded) {
      state.admin.loaded = true;
      refreshOperator();
    } else if (name === 'operator') {
      // Coming back to the view: the figures and alerts may have moved on.
      loadStats();
      loadAlerts();
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Buyer: products and ordering

  async function loadProducts() {
    const box = $('products');
    try {
      state.products = await api('/products');
    } catch (e) {
      clear(box).append(h('p', { class: 'muted', text: 'Products could not be loaded: ' + e.message }));
      return;
    }
    if (!state.selectedProduct && state.products.length) state.selectedProduct = state.products[0].id;
    renderProducts();
  }

  function renderProducts() {
    const box = clear($('products'));
    if (!state.products.length) {
      box.append(h('p', { class: 'muted', text: 'Nothing is on sale.' }));
      return;
    }
    for (const p of state.products) {
      const selected = p.id === state.selectedProduct;
      box.append(h('button', {
        type: 'button',
        class: 'product',
        role: 'radio',
        'aria-checked': String(selected),
        'data-testid': 'product-card',
        'data-product-id': p.id,
        onclick: () => { state.selectedProduct = p.id; renderProducts(); },
      },
      h('span', { class: 'product-carrier', text: p.carrier }),
      h('span', { class: 'product-name', text: p.name }),
      h('span', { class: 'product-desc', text: p.description }),
      h('span', { class: 'product-price', text: yuan(p.price) })));
    }
  }

  async function placeOrder(event) {
    event.preventDefault();
    clearNotice();
    const phoneInput = $('phone');
    const phone = phoneInput.value.replace(/[\s-]/g, '');
    if (!PHONE_RE.test(phone)) {
      phoneInput.setAttribute('aria-invalid', 'true');
      phoneInput.focus();
      notify('Enter a phone number: an optional + and 6 to 15 digits.', 'error');
      return;
    }
    phoneInput.removeAttribute('aria-invalid');
    if (!state.selectedProduct) {
      notify('Choose a product first.', 'error');
      return;
    }
    await busy($('place-order'), async () => {
      const order = await api('/orders', {
        method: 'POST', as: 'buyer', body: { productId: state.selectedProduct, phoneNumber: phone },
      });
      setCurrent(order);
      $('pay-result').hidden = true;
      if (window.matchMedia('(max-width: 899px)').matches) reveal($('current-card'));
      loadMyOrders();
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Buyer: the current order

  function setCurrent(order) {
    stopPolling();
    setPollNote('');
    state.current = { order, seen: [{ status: order.status, at: new Date() }] };
    renderCurrent();
    highlightMyOrder();
  }

  function observe(order) {
    const cur = state.current;
    if (!cur || cur.order.orderNumber !== order.orderNumber) return false;
    const changed = cur.order.status !== order.status;
    cur.order = order;
    const last = cur.seen[cur.seen.length - 1];
    if (!last || last.status !== order.status) cur.seen.push({ status: order.status, at: new Date() });
    return changed;
  }

  /** The statuses this order went (or goes) through, from what was seen here. */
  function routeOf(current) {
    const status = current.order.status;
    const seen = current.seen.map((s) => s.status);
    const has = (s) => seen.includes(s);
    if (status === 'closed') return ROUTES.closed;
    if (status === 'failed') return ROUTES.failed;
    if (status === 'unresolved') return ROUTES.unresolved;
    // Settled by an operator (or a later carrier answer) after it was unresolved.
    if (status === 'success' && has('unresolved')) return ROUTES.unresolvedDelivered;
    // Still being delivered, also again after an unresolved spell (each carrier query, or a retry).
    if (status === 'success' || status === 'unpaid' || status === 'paid' || status === 'recharging') {
      return ROUTES.success;
    }
    // refunding / refunded
    if (has('failed')) return ROUTES.failed;
    if (has('unresolved')) return ROUTES.unresolvedRefunded;
    if (has('closed')) return ROUTES.latePayment;
    if (has('success')) return ROUTES.refundedAfterSuccess;
    // Watched from before delivery and refunded without ever succeeding: the top-up failed
    // (the automatic refund follows within milliseconds, faster than a poll).
    if (has('unpaid') || has('paid') || has('recharging')) return ROUTES.failed;
    return ROUTES.refundUnknown;
  }

  function renderCurrent() {
    const cur = state.current;
    $('current-empty').hidden = !!cur;
    $('current').hidden = !cur;
    if (!cur) return;
    const o = cur.order;
    $('order-number').textContent = o.orderNumber;
    const badge = $('order-status');
    badge.textContent = o.status;
    badge.className = 'status s-' + o.status;

    const facts = clear($('order-facts'));
    const fact = (k, v) => facts.append(h('dt', { text: k }), h('dd', null, v));
    fact('Product', o.productName);
    fact('Phone', h('span', { class: 'mono', text: o.phoneNumber }));
    fact('Amount', yuan(o.amount));
    fact('Placed', timeEl(o.createdAt));
    if (o.paidAt) fact('Paid', timeEl(o.paidAt));
    if (o.transactionId) fact('Transaction', h('span', { class: 'mono', text: o.transactionId }));
    fact('Updated', timeEl(o.updatedAt));

    renderTrack(cur);

    const log = clear($('status-log'));
    for (const s of cur.seen) {
      log.append(h('li', null, h('time', { datetime: s.at.toISOString(), text: timeFormat.format(s.at) }), statusBadge(s.status)));
    }

    // Only GET /orders/{n} carries the notifications; until one is read, keep what was shown.
    if (o.notifications) {
      const told = clear($('buyer-told'));
      for (const n of o.notifications) {
        const shown = NOTIFICATION_STATUS[n.status] || { label: n.status, tone: 'warn' };
        const at = new Date(n.sentAt || n.createdAt);
        told.append(h('li', { 'data-event': n.event },
          h('time', { datetime: at.toISOString(), text: timeFormat.format(at) }),
          h('span', { text: NOTIFICATION_EVENT[n.event] || n.event }),
          h('span', { class: 'muted', text: shown.label })));
      }
      $('buyer-told-box').hidden = o.notifications.length === 0;
    }

    const payable = o.status === 'unpaid';
    $('pay-box').hidden = !payable;
    $('pay').hidden = !state.config.sandbox;
    $('pay-options').hidden = !state.config.sandbox;
    $('pay-unavailable').hidden = state.config.sandbox;
  }

  function renderTrack(cur) {
    const route = routeOf(cur);
    const status = cur.order.status;
    const at = route.indexOf(status);
    const live = state.poll.timer !== null;
    const track = clear($('status-track'));
    route.forEach((step, i) => {
      const classes = [];
      if (i < at) classes.push('done');
      if (i === at) classes.push('current');
      if (i === at && step === 'success') classes.push('done');
      if (i === at && step === 'refunded') classes.push('done');
      if (step === 'failed' && i <= at) classes.push('bad');
      if (step === 'unresolved' && i <= at) classes.push('warn');
      if (i === at && live) classes.push('live');
      const mark = classes.includes('bad') ? '!' : classes.includes('warn') ? '?' : (classes.includes('done') ? '✓' : '');
      track.append(h('li', { class: classes.join(' '), 'data-step': step, 'aria-current': i === at ? 'step' : null },
        h('span', { class: 'dot', 'aria-hidden': 'true', text: mark }), step));
    });
  }

  function setPollNote(text, withResume) {
    const note = clear($('poll-note'));
    if (text) note.append(text);
    if (withResume) {
      note.append(' ', h('button', {
        type: 'button', class: 'link-button', text: 'Resume',
        onclick: () => state.current && startPolling(state.current.order.orderNumber),
      }));
    }
  }

  function stopPolling() {
    state.poll.token += 1;
    if (state.poll.timer !== null) clearTimeout(state.poll.timer);
    state.poll.timer = null;
  }

  /** Follows an order with GET /orders/{n}?refresh=true every second until it settles. */
  function startPolling(orderNumber) {
    stopPolling();
    const token = state.poll.token;
    let errors = 0;
    let failedSince = null;
    let lastChange = Date.now();
    setPollNote('Watching the order…');

    const tick = async () => {
      if (token !== state.poll.token) return;
      let order;
      try {
        order = await api('/orders/' + encodeURIComponent(orderNumber) + '?refresh=true', { as: 'buyer' });
        errors = 0;
      } catch (e) {
        if (token !== state.poll.token) return;
        errors += 1;
        if (errors >= MAX_POLL_ERRORS) {
          state.poll.timer = null;
          setPollNote('Stopped watching: ' + e.message, true);
          renderCurrent();
          return;
        }
        setPollNote('Could not refresh (' + e.message + '); trying again…');
        state.poll.timer = setTimeout(tick, POLL_MS);
        return;
      }
      if (token !== state.poll.token) return;
      const changed = observe(order);
      if (changed) {
        lastChange = Date.now();
        loadMyOrders();
      }
      const s = order.status;
      let done = false;
      let note = 'Watching the order…';
      if (s === 'success' || s === 'refunded' || s === 'closed') {
        done = true;
        note = s === 'success' ? 'Delivered.' : s === 'refunded' ? 'The payment was refunded.' : 'Closed unpaid.';
      } else if (s === 'failed') {
        failedSince = failedSince || Date.now();
        if (Date.now() - failedSince >= FAILED_GRACE_MS) {
          done = true;
          note = 'The top-up failed and no refund has started; an operator can retry or refund it.';
        } else {
          note = 'The top-up failed; waiting for the automatic refund…';
        }
      } else {
        failedSince = null;
        if (s === 'unpaid') note = 'Waiting for the payment to be confirmed…';
        if (s === 'unresolved') {
          note = 'The carrier has not confirmed the top-up yet; it is still being asked, and an operator will settle it.';
        }
        if (Date.now() - lastChange >= IDLE_LIMIT_MS) {
          state.poll.timer = null;
          setPollNote('No change for ' + Math.round(IDLE_LIMIT_MS / 60000) + ' minutes; stopped watching.', true);
          renderCurrent();
          return;
        }
      }
      if (done) {
        state.poll.timer = null;
        setPollNote(note);
        renderCurrent();
        // The buyer's WeChat message goes out in the background just after the change: read it once more.
        setTimeout(() => readOnce(orderNumber), TOLD_DELAY_MS);
        return;
      }
      setPollNote(note);
      state.poll.timer = setTimeout(tick, POLL_MS);
      renderCurrent();
    };
    state.poll.timer = setTimeout(tick, 0);
    renderCurrent();
  }

  /** Reads the shown order once (its notifications come only with GET /orders/{n}), unless it is being watched. */
  async function readOnce(orderNumber) {
    if (state.poll.timer !== null) return;
    let order;
    try {
      order = await api('/orders/' + encodeURIComponent(orderNumber), { as: 'buyer' });
    } catch (e) {
      return; // What is shown stays; the next look reads it again.
    }
    if (state.poll.timer !== null || !state.current || state.current.order.orderNumber !== orderNumber) return;
    observe(order);
    renderCurrent();
  }

  async function pay() {
    const cur = state.current;
    if (!cur) return;
    clearNotice();
    const choice = (document.querySelector('input[name="deliver"]:checked') || { value: 'once' }).value;
    const wrongAmount = choice === 'wrong';
    const deliver = wrongAmount ? 'once' : choice;
    const n = cur.order.orderNumber;
    await busy($('pay'), async () => {
      const params = await api('/payment/create', { method: 'POST', as: 'buyer', body: { orderNumber: n } });
      if (!params || typeof params.paySign !== 'string' || !params.paySign.startsWith('SANDBOX')) {
        throw new ApiError('NOT_SANDBOX', 'The payment parameters are not from the sandbox; pay from the mini-program.');
      }
      const paid = await api('/sandbox/orders/' + encodeURIComponent(n) + '/pay', {
        method: 'POST', as: 'buyer', body: { deliver, wrongAmount },
      });
      renderPayResult(paid, deliver, wrongAmount);
      startPolling(n);
    });
  }

  function renderPayResult(paid, deliver, wrongAmount) {
    const box = clear($('pay-result'));
    box.hidden = false;
    box.append(h('div', null, 'Paid in the sandbox: transaction ', h('span', { class: 'mono', text: paid.transactionId })));
    const answers = paid.callbackAnswers || [];
    if (answers.length) {
      box.append(h('div', null, 'Callback answers: ',
        answers.map((a, i) => [i ? ', ' : '', 'HTTP ' + a.status + (a.errcode === null || a.errcode === undefined ? '' : ' errcode ' + a.errcode)])));
    } else if (deliver === 'late') {
      box.append(h('div', { class: 'muted', text: 'The callback arrives in about 5 seconds.' }));
    } else if (deliver === 'never') {
      box.append(h('div', { class: 'muted', text: 'No callback: the payment is found by querying WeChat (refresh or reconciliation).' }));
    }
    if (wrongAmount) box.append(h('div', { class: 'muted', text: 'The callback carried the wrong amount: the operator view shows the anomaly.' }));
  }

  // ---------------------------------------------------------------------------------------------
  // Buyer: order list

  let myOrdersSeq = 0;

  async function loadMyOrders() {
    const seq = ++myOrdersSeq;
    const box = $('my-orders');
    let page;
    try {
      page = await api('/orders?page=1&pageSize=20', { as: 'buyer' });
    } catch (e) {
      if (seq === myOrdersSeq) clear(box).append(h('p', { class: 'muted', text: 'Orders could not be loaded: ' + e.message }));
      return;
    }
    if (seq !== myOrdersSeq) return;
    clear(box);
    if (!page.items.length) {
      box.append(h('div', { class: 'empty', text: 'No orders yet for ' + buyerId() + '.' }));
      return;
    }
    for (const o of page.items) {
      box.append(h('button', {
        type: 'button', class: 'my-order', 'data-testid': 'my-order', 'data-order-number': o.orderNumber,
        onclick: () => openMyOrder(o),
      },
      h('span', { class: 'mono', text: o.orderNumber }),
      statusBadge(o.status),
      h('span', { class: 'sub' }, o.productName + ' · ' + o.phoneNumber + ' · ' + yuan(o.amount) + ' · ', timeEl(o.createdAt))));
    }
    if (page.total > page.items.length) {
      box.append(h('p', { class: 'hint', text: 'Showing the latest ' + page.items.length + ' of ' + page.total + '.' }));
    }
    highlightMyOrder();
  }

  function highlightMyOrder() {
    const n = state.current ? state.current.order.orderNumber : null;
    for (const el of document.querySelectorAll('.my-order')) {
      el.classList.toggle('selected', el.dataset.orderNumber === n);
    }
  }

  function openMyOrder(order) {
    clearNotice();
    $('pay-result').hidden = true;
    setCurrent(order);
    if (!['unpaid', 'success', 'refunded', 'closed'].includes(order.status)) startPolling(order.orderNumber);
    else readOnce(order.orderNumber);
    if (window.matchMedia('(max-width: 899px)').matches) reveal($('current-card'));
  }

  // ---------------------------------------------------------------------------------------------
  // Operator

  function showTokenBox(show) {
    if (state.config.adminToken) return;
    $('token-box').hidden = !show;
    if (show) $('admin-token').value = storageGet(STORE.token) || '';
  }

  function refreshOperator() {
    loadReconciliation();
    loadStats();
    loadAlerts();
    loadCatalog();
    loadAdminOrders();
    if (state.admin.selected) loadDetail(state.admin.selected);
  }

  /** Today's books, the statistics and the alerts: the Refresh button at the top of the view. */
  function refreshOverview() {
    loadReconciliation();
    loadStats();
    loadAlerts();
  }

  async function loadReconciliation() {
    const root = $('reconciliation');
    let r;
    try {
      r = await api('/admin/reconciliation', { as: 'admin' });
    } catch (e) {
      clear($('recon-totals')).append(h('p', { class: 'muted', text: 'Not loaded: ' + e.message }));
      clear($('recon-mismatches'));
      $('recon-balanced').textContent = '';
      $('recon-balanced').className = 'pill';
      return;
    }
    root.dataset.balanced = String(r.balanced);
    $('recon-date').textContent = 'Business day ' + r.date + ' (UTC+8)';
    const pill = $('recon-balanced');
    pill.textContent = r.balanced ? 'balanced' : r.mismatches.length + ' mismatch' + (r.mismatches.length === 1 ? '' : 'es');
    pill.className = 'pill ' + (r.balanced ? 'ok' : 'bad');
    const totals = clear($('recon-totals'));
    const total = (k, v, sub) => totals.append(h('div', { class: 'total' }, h('div', { class: 'k', text: k }), h('div', { class: 'v', text: v }),
      sub ? h('div', { class: 'sub', text: sub }) : null));
    total('Paid orders', String(r.paidCount));
    total('Paid', yuan(r.paidTotal));
    total('Delivered', yuan(r.deliveredTotal));
    total('Refunded', yuan(r.refundedTotal));
    total('In flight', yuan(r.inFlightTotal), 'paid, recharging or unresolved');
    const mm = clear($('recon-mismatches'));
    if (r.mismatches.length) {
      const box = h('div', { class: 'mismatches', 'data-testid': 'mismatches' }, h('h3', { text: 'Mismatches' }));
      for (const m of r.mismatches) {
        box.append(h('div', { class: 'mismatch' },
          h('button', { type: 'button', class: 'link-button mono', text: m.orderNumber, onclick: () => loadDetail(m.orderNumber, true) }),
          ' ', statusBadge(m.status), ' ', m.reason,
          h('div', { class: 'nums', text: 'paid ' + m.paid + ' · delivered ' + m.delivered + ' · refunded ' + m.refunded + ' · in flight ' + m.inFlight })));
      }
      mm.append(box);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Operator: statistics

  const FUNNEL = [
    { key: 'placed', label: 'Placed', tone: 'placed' },
    { key: 'paid', label: 'Paid', tone: 'paid' },
    { key: 'delivered', label: 'Delivered', tone: 'delivered', branch: true },
    { key: 'failed', label: 'Failed', tone: 'failed', branch: true },
    { key: 'refunded', label: 'Refunded', tone: 'refunded', branch: true },
  ];
  const DAY_RE = /^\d{4}-\d{2}-\d{2}$/;
  /** The server answers at most 367 days (the last day may be 366 days after the first). */
  const MAX_RANGE_DAYS = 367;
  const percentFormat = new Intl.NumberFormat(undefined, { style: 'percent', maximumFractionDigits: 1 });
  const countFormat = new Intl.NumberFormat(undefined);

  function percent(rate) {
    return typeof rate === 'number' && Number.isFinite(rate) ? percentFormat.format(rate) : '—';
  }

  function duration(ms) {
    if (typeof ms !== 'number' || !Number.isFinite(ms)) return '—';
    if (ms < 1000) return Math.round(ms) + ' ms';
    if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + ' s';
    return (ms / 60000).toFixed(1) + ' min';
  }

  function plural(n, one, many) {
    return countFormat.format(n) + ' ' + (n === 1 ? one : (many || one + 's'));
  }

  function hourRange(hour) {
    const hh = String(hour).padStart(2, '0');
    return hh + ':00–' + hh + ':59';
  }

  /** A round upper bound for a chart axis: 1, 2, 5, 10, 20, 50… */
  function niceMax(value) {
    if (value <= 1) return 1;
    const magnitude = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 5, 10]) {
      if (step * magnitude >= value) return step * magnitude;
    }
    return 10 * magnitude;
  }

  let statsSeq = 0;

  /** GET /admin/stats for the chosen range (none chosen: the server's default, the last 7 days). */
  async function loadStats() {
    const seq = ++statsSeq;
    const range = state.stats.range;
    const query = range ? '?' + new URLSearchParams({ from: range.from, to: range.to }).toString() : '';
    const root = $('stats');
    root.setAttribute('aria-busy', 'true');
    $('stats-default').disabled = !range;
    let s;
    try {
      s = await api('/admin/stats' + query, { as: 'admin' });
    } catch (e) {
      if (seq !== statsSeq) return;
      root.removeAttribute('aria-busy');
      delete root.dataset.placed;
      clear($('stats-body')).append(h('p', { class: 'muted', 'data-testid': 'stats-error', text: 'Not loaded: ' + e.message }));
      return;
    }
    if (seq !== statsSeq) return;
    root.removeAttribute('aria-busy');
    renderStats(s);
  }

  function renderStats(s) {
    const root = $('stats');
    const hours = Array.isArray(s.ordersByHour) ? s.ordersByHour.slice(0, 24) : [];
    while (hours.length < 24) hours.push(0);
    root.dataset.from = s.from;
    root.dataset.to = s.to;
    root.dataset.placed = String(s.placed);
    root.dataset.delivered = String(s.delivered);
    // The inputs follow what was actually shown (the server's days when none were chosen).
    $('stats-from').value = s.from;
    $('stats-to').value = s.to;
    $('stats-from').removeAttribute('aria-invalid');
    $('stats-to').removeAttribute('aria-invalid');
    $('stats-range-note').textContent = 'Orders placed ' + (s.from === s.to ? 'on ' + s.from : s.from + ' to ' + s.to) +
      ' (UTC+8 days)' + (state.stats.range ? '' : ', the last 7 days');

    const body = clear($('stats-body'));
    body.append(renderFunnel(s));

    const groups = h('div', { class: 'stat-groups' });
    const group = (title, testid, tiles) => {
      const box = h('div', { class: 'totals cols-' + tiles.length });
      for (const [k, v, sub, attrs] of tiles) {
        box.append(h('div', Object.assign({ class: 'total' }, attrs || {}),
          h('div', { class: 'k', text: k }), h('div', { class: 'v', text: v }),
          sub ? h('div', { class: 'sub', text: sub }) : null));
      }
      groups.append(h('section', { class: 'stat-group', 'data-testid': testid, 'aria-label': title },
        h('div', { class: 'subhead', text: title }), box));
    };
    const finished = s.delivered + s.failed;
    group('Success rates', 'stats-rates', [
      ['Payment', percent(s.paymentSuccessRate),
        s.placed ? countFormat.format(s.paid) + ' of ' + plural(s.placed, 'order') + ' paid' : 'no orders',
        { 'data-testid': 'payment-success-rate', 'data-rate': s.paymentSuccessRate === null ? null : String(s.paymentSuccessRate) }],
      ['Top-up', percent(s.topUpSuccessRate),
        finished ? countFormat.format(s.delivered) + ' of ' + plural(finished, 'top-up') + ' delivered' : 'no top-ups finished',
        { 'data-testid': 'topup-success-rate', 'data-rate': s.topUpSuccessRate === null ? null : String(s.topUpSuccessRate) }],
    ]);
    group('Amounts', 'stats-amounts', [
      ['Paid', yuan(s.paidTotal)],
      ['Delivered', yuan(s.deliveredTotal)],
      ['Refunded', yuan(s.refundedTotal)],
    ]);
    group('Top-up latency, payment to delivery', 'stats-latency', [
      ['p50', duration(s.topUpLatencyP50Ms)],
      ['p90', duration(s.topUpLatencyP90Ms)],
      ['p99', duration(s.topUpLatencyP99Ms)],
    ]);
    body.append(groups);
    body.append(renderHourChart(hours));
  }

  /** The funnel as horizontal bars, each as long as its share of the orders placed. */
  function renderFunnel(s) {
    const max = Math.max(1, ...FUNNEL.map((f) => Number(s[f.key]) || 0));
    const list = h('ol', { class: 'funnel', 'data-testid': 'funnel' });
    for (const f of FUNNEL) {
      const count = Number(s[f.key]) || 0;
      const share = s.placed ? ' (' + percent(count / s.placed) + ' of placed)' : '';
      const fill = h('span', { class: 'funnel-fill' });
      fill.style.width = (count / max) * 100 + '%';
      list.append(h('li', {
        class: 'funnel-row f-' + f.tone + (f.branch ? ' branch' : ''),
        'data-stage': f.key,
        'data-count': String(count),
      },
      h('span', { class: 'funnel-label' }, f.branch ? h('span', { class: 'branch-mark', 'aria-hidden': 'true', text: '↳' }) : null, f.label),
      h('span', { class: 'funnel-track', 'aria-hidden': 'true' }, fill),
      h('span', { class: 'funnel-value' }, countFormat.format(count), h('span', { class: 'sr-only', text: share }))));
    }
    return h('figure', { class: 'chart' },
      h('figcaption', { class: 'subhead', text: 'Funnel: placed → paid → delivered, failed or refunded' }),
      list);
  }

  /** Orders per hour of the day as 24 columns, with a round axis maximum. */
  function renderHourChart(hours) {
    const total = hours.reduce((a, b) => a + b, 0);
    const peak = Math.max(0, ...hours);
    const top = niceMax(peak);
    const peakHour = hours.indexOf(peak);
    const bars = h('ol', { class: 'hours', 'data-testid': 'orders-by-hour' });
    hours.forEach((count, hour) => {
      const fill = h('span', { class: 'hour-fill' + (count && count === peak ? ' peak' : '') });
      fill.style.height = (count / top) * 100 + '%';
      bars.append(h('li', {
        class: 'hour' + (count ? '' : ' zero'),
        'data-hour': String(hour),
        'data-count': String(count),
        title: hourRange(hour) + ': ' + plural(count, 'order'),
      },
      fill,
      h('span', { class: 'sr-only', text: hourRange(hour) + ': ' + plural(count, 'order') })));
    });
    const axis = h('div', { class: 'hours-axis', 'aria-hidden': 'true' },
      h('span', { text: countFormat.format(top) }), h('span', { text: top % 2 ? '' : countFormat.format(top / 2) }), h('span', { text: '0' }));
    const labels = h('div', { class: 'hours-labels', 'aria-hidden': 'true' });
    for (let hour = 0; hour < 24; hour += 1) {
      labels.append(h('span', { class: hour % 6 ? 'minor' : null, text: hour % 3 ? '' : String(hour).padStart(2, '0') }));
    }
    const summary = total
      ? plural(total, 'order') + '; busiest ' + hourRange(peakHour) + ' with ' + plural(peak, 'order') + '.'
      : 'No orders placed in this range.';
    return h('figure', { class: 'chart' },
      h('figcaption', { class: 'subhead', id: 'orders-by-hour-title', text: 'Orders per hour of day (UTC+8)' }),
      h('div', { class: 'hours-chart' }, axis, h('div', { class: 'hours-plot' }, bars, labels)),
      h('p', { class: 'hint', 'data-testid': 'orders-by-hour-summary', text: summary }));
  }

  function applyStatsRange(ev) {
    ev.preventDefault();
    const fromInput = $('stats-from');
    const toInput = $('stats-to');
    const from = fromInput.value;
    const to = toInput.value;
    if (!DAY_RE.test(from) || !DAY_RE.test(to)) {
      const missing = DAY_RE.test(from) ? toInput : fromInput;
      missing.setAttribute('aria-invalid', 'true');
      missing.focus();
      notify('Choose both days of the range.', 'error');
      return;
    }
    if (from > to) {
      fromInput.setAttribute('aria-invalid', 'true');
      fromInput.focus();
      notify('The first day must not be after the last.', 'error');
      return;
    }
    if ((Date.parse(to) - Date.parse(from)) / 86400000 > MAX_RANGE_DAYS - 1) {
      fromInput.setAttribute('aria-invalid', 'true');
      fromInput.focus();
      notify('A range covers at most ' + MAX_RANGE_DAYS + ' days.', 'error');
      return;
    }
    fromInput.removeAttribute('aria-invalid');
    toInput.removeAttribute('aria-invalid');
    clearNotice();
    state.stats.range = { from, to };
    loadStats();
  }

  // ---------------------------------------------------------------------------------------------
  // Operator: alerts

  const ALERT_KIND = {
    anomaly: { label: 'anomaly', tone: 'warn' },
    topup_failed: { label: 'top-up failed', tone: 'bad' },
    refund_failed: { label: 'refund failed', tone: 'bad' },
    reconciliation_mismatch: { label: 'books mismatch', tone: 'purple' },
    topup_unresolved: { label: 'top-up unresolved', tone: 'unresolved' },
    merchant_funds_low: { label: 'WeChat Pay balance low', tone: 'bad' },
  };
  const ALERT_DELIVERY = {
    pending: { label: 'sending', tone: 'warn' },
    sent: { label: 'sent', tone: 'good' },
    failed: { label: 'not delivered', tone: 'bad' },
    rate_limited: { label: 'rate limited', tone: 'warn' },
    disabled: { label: 'recorded (no webhook)', tone: '' },
  };

  let alertsSeq = 0;

  async function loadAlerts() {
    const seq = ++alertsSeq;
    const list = $('alerts-list');
    let page;
    try {
      page = await api('/admin/alerts?page=' + state.alerts.page + '&pageSize=' + state.alerts.pageSize, { as: 'admin' });
    } catch (e) {
      if (seq !== alertsSeq) return;
      clear(list).append(h('li', { class: 'muted', text: 'Alerts could not be loaded: ' + e.message }));
      clear($('alerts-pager'));
      $('alerts-count').textContent = '';
      $('alerts-count').className = 'pill';
      return;
    }
    if (seq !== alertsSeq) return;
    // A page past the end (alerts are never deleted, but be safe): go back to the first.
    if (!page.items.length && page.total && state.alerts.page > 1) {
      state.alerts.page = 1;
      loadAlerts();
      return;
    }
    renderAlerts(page);
  }

  function renderAlerts(page) {
    const root = $('alerts');
    root.dataset.total = String(page.total);
    const count = $('alerts-count');
    count.textContent = page.total ? plural(page.total, 'alert') : 'none';
    count.className = 'pill ' + (page.total ? 'bad' : 'ok');
    const list = clear($('alerts-list'));
    if (!page.items.length) {
      list.append(h('li', { class: 'empty', 'data-testid': 'alerts-empty', text: 'No alerts raised.' }));
    }
    for (const a of page.items) {
      const kind = ALERT_KIND[a.kind] || { label: a.kind.replace(/_/g, ' '), tone: '' };
      const delivery = ALERT_DELIVERY[a.delivery] || { label: a.delivery, tone: '' };
      list.append(h('li', {
        class: 'alert-row',
        'data-testid': 'alert-row',
        'data-kind': a.kind,
        'data-order-number': a.orderNumber,
        'data-delivery': a.delivery,
      },
      h('div', { class: 'alert-head' },
        h('span', { class: 'tag alert-kind ' + kind.tone, title: a.kind, text: kind.label }),
        h('button', {
          type: 'button', class: 'link-button mono alert-order', text: a.orderNumber,
          'aria-label': 'Open order ' + a.orderNumber,
          onclick: () => loadDetail(a.orderNumber, true),
        }),
        h('span', { class: 'alert-time' }, timeEl(a.createdAt))),
      h('div', { class: 'alert-message', text: a.message }),
      h('div', { class: 'alert-delivery' },
        h('span', { class: 'tag ' + delivery.tone, 'data-testid': 'alert-delivery', title: 'delivery: ' + a.delivery, text: delivery.label }),
        a.sentAt ? [' ', h('span', { class: 'muted', text: 'at ' }), timeEl(a.sentAt, timeFormat)] : null)));
    }
    const pager = clear($('alerts-pager'));
    const pages = Math.max(1, Math.ceil(page.total / page.pageSize));
    if (pages > 1) {
      const first = (page.page - 1) * page.pageSize + 1;
      const last = Math.min(page.total, page.page * page.pageSize);
      pager.append(h('span', { text: first + '–' + last + ' of ' + page.total }),
        h('span', { class: 'buttons' },
          h('button', { type: 'button', class: 'secondary small', text: 'Newer', disabled: page.page <= 1,
            onclick: () => { state.alerts.page -= 1; loadAlerts(); } }),
          h('button', { type: 'button', class: 'secondary small', text: 'Older', disabled: page.page >= pages,
            onclick: () => { state.alerts.page += 1; loadAlerts(); } })));
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Operator: orders

  let adminOrdersSeq = 0;

  async function loadAdminOrders() {
    const seq = ++adminOrdersSeq;
    const params = new URLSearchParams({
      status: $('filter-status').value,
      anomaly: String($('filter-anomaly').checked),
      refundFailed: String($('filter-refund-failed').checked),
      q: $('filter-q').value.trim(),
      page: String(state.admin.page),
      pageSize: String(state.admin.pageSize),
    });
    const box = $('admin-orders');
    let page;
    try {
      page = await api('/admin/orders?' + params.toString(), { as: 'admin' });
    } catch (e) {
      if (seq === adminOrdersSeq) {
        clear(box).append(h('p', { class: 'muted', text: 'Orders could not be loaded: ' + e.message }));
        clear($('admin-pager'));
      }
      return;
    }
    if (seq !== adminOrdersSeq) return;
    state.admin.total = page.total;
    clear(box);
    if (!page.items.length) {
      box.append(h('div', { class: 'empty', 'data-testid': 'admin-orders-empty', text: 'No orders match.' }));
    } else {
      box.append(h('div', { class: 'table-head', 'aria-hidden': 'true' },
        h('span', { text: 'Order' }), h('span', { text: 'Phone' }), h('span', { text: 'Amount' }),
        h('span', { text: 'Status' }), h('span', { text: 'Created' })));
      for (const o of page.items) {
        box.append(h('button', {
          type: 'button',
          class: 'admin-row' + (o.orderNumber === state.admin.selected ? ' selected' : ''),
          'data-testid': 'admin-order-row',
          'data-order-number': o.orderNumber,
          'data-status': o.status,
          onclick: () => loadDetail(o.orderNumber, true),
        },
        h('span', { class: 'c-number mono' }, o.orderNumber, o.anomaly ? h('span', { class: 'flag', title: 'Anomaly: ' + o.anomaly, text: '⚠' }) : null),
        h('span', { class: 'c-phone mono', text: o.phoneNumber }),
        h('span', { class: 'c-amount num', text: yuan(o.amount) }),
        h('span', { class: 'c-status' }, statusBadge(o.status)),
        h('span', { class: 'c-created' }, timeEl(o.createdAt))));
      }
    }
    renderPager(page);
  }

  function renderPager(page) {
    const pager = clear($('admin-pager'));
    const pages = Math.max(1, Math.ceil(page.total / page.pageSize));
    const first = page.total ? (page.page - 1) * page.pageSize + 1 : 0;
    const last = Math.min(page.total, page.page * page.pageSize);
    pager.append(h('span', { text: page.total ? first + '–' + last + ' of ' + page.total : '0 orders' }));
    if (pages > 1) {
      pager.append(h('span', { class: 'buttons' },
        h('button', { type: 'button', class: 'secondary small', text: 'Previous', disabled: page.page <= 1,
          onclick: () => { state.admin.page -= 1; loadAdminOrders(); } }),
        h('button', { type: 'button', class: 'secondary small', text: 'Next', disabled: page.page >= pages,
          onclick: () => { state.admin.page += 1; loadAdminOrders(); } })));
    }
  }

  let detailSeq = 0;

  async function loadDetail(orderNumber, bringIntoView) {
    const seq = ++detailSeq;
    state.admin.selected = orderNumber;
    clearTimeout(state.admin.detailTimer);
    for (const row of document.querySelectorAll('.admin-row')) {
      row.classList.toggle('selected', row.dataset.orderNumber === orderNumber);
    }
    let history;
    try {
      history = await api('/admin/orders/' + encodeURIComponent(orderNumber), { as: 'admin' });
    } catch (e) {
      if (seq === detailSeq) fail(e);
      return;
    }
    if (seq !== detailSeq) return;
    renderDetail(history);
    if (bringIntoView && window.matchMedia('(max-width: 1099px)').matches) {
      reveal($('detail-card'));
    }
    // Orders still moving are followed while they are on screen; not while the operator fills in a
    // form of the detail (a refresh would rebuild it), which is checked again a little later.
    if (MOVING.includes(history.order.status)) {
      const follow = () => {
        if ($('view-operator').hidden || state.admin.selected !== orderNumber) return;
        if ($('order-detail').querySelector('form:not([hidden])')) {
          state.admin.detailTimer = setTimeout(follow, 2000);
          return;
        }
        loadDetail(orderNumber, false);
      };
      state.admin.detailTimer = setTimeout(follow, 2000);
    }
  }

  function renderDetail(history) {
    const o = history.order;
    $('detail-empty').hidden = true;
    const root = clear($('order-detail'));
    root.hidden = false;
    root.dataset.orderNumber = o.orderNumber;
    root.dataset.status = o.status;

    root.append(h('div', { class: 'detail-title' },
      h('h2', { text: o.orderNumber }),
      statusBadge(o.status, { 'data-testid': 'detail-status' })));
    root.append(h('div', { class: 'detail-sub', text: o.productName + ' · ' + o.phoneNumber + ' · ' + yuan(o.amount) }));

    if (o.status === 'unresolved') {
      root.append(h('div', { class: 'banner unresolved', role: 'status', 'data-testid': 'detail-unresolved' },
        h('strong', { text: 'Unresolved' }), UNRESOLVED_EXPLAINED));
    }
    if (o.anomaly) {
      root.append(h('div', { class: 'banner anomaly', 'data-testid': 'detail-anomaly' }, h('strong', { text: 'Anomaly' }), o.anomaly));
    }
    if (o.failureReason) {
      const settledByOperator = o.status !== 'unresolved' && markedDelivered(o);
      const title = o.status === 'unresolved' ? 'Last carrier answer'
        : settledByOperator ? 'Operator note'
        : o.status === 'success' ? 'Last carrier problem' : 'Failure reason';
      root.append(h('div', {
        class: 'banner ' + (o.status === 'unresolved' ? 'unresolved' : settledByOperator ? 'note' : 'failure'),
        'data-testid': 'detail-failure',
      }, h('strong', { text: title }), o.failureReason));
    }

    const facts = h('dl', { class: 'facts' });
    const fact = (k, v) => facts.append(h('dt', { text: k }), h('dd', null, v));
    fact('Buyer', h('span', { class: 'mono', text: o.openid }));
    fact('Created', timeEl(o.createdAt));
    fact('Paid', o.paidAt ? timeEl(o.paidAt) : '—');
    if (o.transactionId) fact('Transaction', h('span', { class: 'mono', text: o.transactionId }));
    fact('Attempts', String(o.fulfilAttempts) + (o.submitted ? ' (submitted to the carrier)' : ''));
    if (o.leaseOwner || o.leaseExpiresAt) {
      const next = o.status === 'unresolved' ? 'next carrier query ' : 'next try ';
      fact('Lease', [o.leaseOwner ? h('span', { class: 'mono', text: o.leaseOwner + ' ' }) : next, timeEl(o.leaseExpiresAt)]);
    }
    if (o.deliveredAt) fact('Delivered', timeEl(o.deliveredAt));
    if (o.providerReference) fact('Carrier ref', h('span', { class: 'mono', text: o.providerReference }));
    fact('Refunded', yuan(o.refundAmount) + ' of ' + yuan(o.amount));
    if (o.closedAt) fact('Closed', timeEl(o.closedAt));
    root.append(facts);

    // Actions. One form open at a time: opening one closes the other.
    const actions = h('div', { class: 'actions' });
    const forms = [];
    const toggle = (form) => {
      const open = form.hidden;
      for (const f of forms) f.hidden = true;
      form.hidden = !open;
      if (open) form.querySelector('input[type="text"]').focus();
    };
    if (o.status === 'failed' || o.status === 'unresolved') {
      actions.append(h('button', {
        type: 'button', class: 'primary small', 'data-testid': 'retry', text: 'Retry top-up',
        onclick: (ev) => retryOrder(o.orderNumber, ev.currentTarget),
      }));
    }
    if (o.status === 'unresolved') {
      const markForm = buildMarkDeliveredForm(o);
      forms.push(markForm);
      actions.append(h('button', {
        type: 'button', class: 'secondary small', 'data-testid': 'mark-delivered-open', text: 'Mark delivered…',
        onclick: () => toggle(markForm),
      }));
    }
    const scope = refundScope(o);
    if (scope) {
      const refundForm = buildRefundForm(o, scope);
      forms.push(refundForm);
      actions.append(h('button', {
        type: 'button', class: 'danger small', 'data-testid': 'refund-open', text: 'Refund…',
        onclick: () => toggle(refundForm),
      }));
    }
    actions.append(h('button', {
      type: 'button', class: 'secondary small', text: 'Refresh', onclick: () => loadDetail(o.orderNumber, false),
    }));
    root.append(actions);
    root.append(...forms);

    root.append(h('div', { class: 'subhead', text: 'History' }));
    const list = h('ol', { class: 'timeline', 'data-testid': 'timeline' });
    for (const entry of timelineOf(history)) list.append(renderEntry(entry));
    root.append(list);
  }

  /** The note an operator left when settling an unresolved order as delivered (kept as its failureReason). */
  function markedDelivered(o) {
    return typeof o.failureReason === 'string' && o.failureReason.startsWith('marked delivered by an operator');
  }

  /**
   * The refund form. `scope` 'any': a reason and an optional amount (empty = all that is left);
   * 'whole': no amount (an undelivered order is refunded whole), and for an unresolved order the
   * operator may force it, which the service records with the reason.
   */
  function buildRefundForm(o, scope) {
    const whole = scope === 'whole';
    const unresolved = o.status === 'unresolved';
    const reason = h('input', { type: 'text', maxlength: '80', placeholder: 'shown to the payer', 'data-testid': 'refund-reason' });
    const amount = whole ? null : h('input', { type: 'text', inputmode: 'decimal', placeholder: remaining(o), 'data-testid': 'refund-amount' });
    const force = unresolved ? h('input', { type: 'checkbox', 'data-testid': 'refund-force' }) : null;
    const submit = h('button', { type: 'submit', class: 'danger small', text: 'Refund', 'data-testid': 'refund-submit' });
    const cancel = h('button', { type: 'button', class: 'secondary small', text: 'Cancel', onclick: () => { form.hidden = true; } });
    const form = whole
      ? h('form', { class: 'refund-form stacked', hidden: true },
        h('label', { class: 'field' }, h('span', { text: 'Reason' }), reason),
        h('p', { class: 'hint form-note', 'data-testid': 'refund-whole-note',
          text: 'Refunds all that is left, ' + yuan(remaining(o)) + ': an order that was not delivered is refunded whole only.' }),
        force ? [
          h('label', { class: 'check form-note' }, force, ' Force (the carrier has not proved it failed)'),
          h('p', { class: 'hint form-note',
            text: 'Without it the carrier is asked first, and the refund goes ahead only if it proves the top-up did not arrive.' }),
        ] : null,
        submit, cancel)
      : h('form', { class: 'refund-form', hidden: true },
        h('label', { class: 'field' }, h('span', { text: 'Reason' }), reason),
        h('label', { class: 'field' }, h('span', { text: 'Amount (¥, empty = all left)' }), amount),
        submit, cancel);
    reason.addEventListener('input', () => reason.removeAttribute('aria-invalid'));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const why = reason.value.trim();
      if (!why) {
        reason.setAttribute('aria-invalid', 'true');
        reason.focus();
        notify('A refund needs a reason.', 'error');
        return;
      }
      const body = { reason: why };
      const value = amount ? amount.value.trim() : '';
      if (value) body.amount = value;
      if (force) body.force = force.checked;
      await busy(submit, async () => {
        let refund;
        try {
          refund = await api('/admin/orders/' + encodeURIComponent(o.orderNumber) + '/refund', {
            method: 'POST', as: 'admin', body,
          });
        } catch (e) {
          // The carrier did not prove non-delivery: the operator may force it (or retry, or mark delivered).
          if (force && e.code === 'REFUND_NEEDS_PROOF') force.focus();
          throw e;
        }
        notify(refundNotice(refund), 'ok');
        afterAction(o.orderNumber);
      });
    });
    return form;
  }

  /** Settles an unresolved order as delivered; the note (how the operator knows) is required. */
  function buildMarkDeliveredForm(o) {
    const note = h('input', {
      type: 'text', maxlength: '400', placeholder: 'how you know it arrived, e.g. the carrier portal shows it delivered',
      'data-testid': 'mark-delivered-note',
    });
    const submit = h('button', { type: 'submit', class: 'primary small', text: 'Mark delivered', 'data-testid': 'mark-delivered-submit' });
    const form = h('form', { class: 'refund-form stacked mark-delivered-form', hidden: true },
      h('label', { class: 'field' }, h('span', { text: 'Note (kept on the order)' }), note),
      h('p', { class: 'hint form-note', text: 'The order becomes success and the carrier is no longer asked about it.' }),
      submit,
      h('button', { type: 'button', class: 'secondary small', text: 'Cancel', onclick: () => { form.hidden = true; } }));
    note.addEventListener('input', () => note.removeAttribute('aria-invalid'));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const text = note.value.trim();
      if (!text) {
        note.setAttribute('aria-invalid', 'true');
        note.focus();
        notify('Marking an order delivered needs a note: how do you know the top-up arrived?', 'error');
        return;
      }
      await busy(submit, async () => {
        const order = await api('/admin/orders/' + encodeURIComponent(o.orderNumber) + '/mark-delivered', {
          method: 'POST', as: 'admin', body: { note: text },
        });
        notify('Order ' + order.orderNumber + ' is ' + order.status + ': marked delivered.', 'ok');
        afterAction(o.orderNumber);
      });
    });
    return form;
  }

  function isWaitingForFunds(refund) {
    return refund.status === 'pending' && typeof refund.lastError === 'string' && refund.lastError.includes('NOTENOUGH');
  }

  function refundNotice(refund) {
    return 'Refund ' + refund.outRefundNo + ' of ' + yuan(refund.amount) + ': ' + refund.status +
      (isWaitingForFunds(refund) ? ' (' + NOTENOUGH_HINT + ')' : '') + '.';
  }

  /** Sends a failed refund again under its own number (the service asks WeChat first). */
  async function retryRefund(orderNumber, outRefundNo, button) {
    await busy(button, async () => {
      const refund = await api('/admin/refunds/' + encodeURIComponent(outRefundNo) + '/retry', { method: 'POST', as: 'admin' });
      notify(refundNotice(refund), 'ok');
      afterAction(orderNumber);
    });
  }

  /** Replaces a failed refund WeChat proves it never paid with a new number for the same amount. */
  async function replaceRefund(orderNumber, outRefundNo, button) {
    await busy(button, async () => {
      const refund = await api('/admin/refunds/' + encodeURIComponent(outRefundNo) + '/replace', { method: 'POST', as: 'admin' });
      notify(refund.outRefundNo === outRefundNo ? refundNotice(refund)
        : 'Refund ' + outRefundNo + ' replaced. ' + refundNotice(refund), 'ok');
      afterAction(orderNumber);
    });
  }

  async function retryOrder(orderNumber, button) {
    await busy(button, async () => {
      const order = await api('/admin/orders/' + encodeURIComponent(orderNumber) + '/retry', { method: 'POST', as: 'admin' });
      notify('Order ' + order.orderNumber + ' is ' + order.status + ' again; delivery restarted.', 'ok');
      afterAction(orderNumber);
    });
  }

  function afterAction(orderNumber) {
    loadDetail(orderNumber, false);
    loadAdminOrders();
    refreshOverview();
  }

  const PAYMENT_KIND = { payment_callback: 'Payment callback', refund_callback: 'Refund notification' };
  const GOOD = ['accepted', 'confirmed', 'delivered', 'success', 'duplicate'];
  const BAD = ['anomaly', 'rejected', 'refused', 'failed', 'malformed', 'unknown_order', 'not_success', 'unprocessable', 'rate_limited'];

  function tone(outcome) {
    if (GOOD.includes(outcome)) return 'good';
    if (BAD.includes(outcome)) return 'bad';
    return 'warn';
  }

  /** Payment events, carrier attempts, refunds and the order's own milestones, oldest first. */
  function timelineOf(history) {
    const o = history.order;
    const entries = [];
    const add = (at, entry, notBefore) => {
      const d = parseTime(at);
      if (!d) return null;
      const floor = parseTime(notBefore);
      const time = floor ? Math.max(d.getTime(), floor.getTime()) : d.getTime();
      const added = Object.assign({ at, time, seq: entries.length }, entry);
      entries.push(added);
      return added;
    };
    add(o.createdAt, { kind: 'order', title: 'Order placed', body: o.productName + ' for ' + o.phoneNumber + ', ' + yuan(o.amount) });
    // paidAt is WeChat's payment time, to the second only: keep it after the order was placed.
    if (o.paidAt) add(o.paidAt, { kind: 'order', title: 'Paid', body: o.transactionId ? 'transaction ' + o.transactionId : null, tone: 'good' }, o.createdAt);
    for (const e of history.paymentEvents) {
      add(e.receivedAt, {
        kind: 'payment',
        title: (PAYMENT_KIND[e.kind] || e.kind),
        outcome: e.outcome,
        body: e.detail,
        raw: { headers: e.headers, body: e.body },
        tone: tone(e.outcome),
      });
    }
    if (o.rechargeAt) add(o.rechargeAt, { kind: 'order', title: 'Top-up started' });
    for (const a of history.attempts) {
      add(a.createdAt, {
        kind: 'attempt',
        title: 'Carrier ' + a.action + ' #' + a.attempt,
        outcome: a.outcome,
        body: [a.message, a.latencyMs + ' ms', a.worker].filter(Boolean).join(' · '),
        tone: tone(a.outcome),
      });
    }
    if (o.deliveredAt) {
      add(o.deliveredAt, markedDelivered(o)
        ? { kind: 'order', title: 'Marked delivered', body: o.failureReason, tone: 'good' }
        : { kind: 'order', title: 'Delivered', body: o.providerReference ? 'carrier ref ' + o.providerReference : null, tone: 'good' });
    }
    for (const r of history.refunds) {
      const settled = r.status === 'success' || r.status === 'failed' || r.status === 'replaced';
      const opened = add(r.createdAt, {
        kind: 'refund',
        title: 'Refund ' + yuan(r.amount) + ' opened',
        outcome: settled ? null : r.status,
        body: [r.reason, sourceLabel(r.source), r.outRefundNo].filter(Boolean).join(' · '),
        tone: settled ? null : 'warn',
      });
      if (settled) {
        add(r.updatedAt, {
          kind: 'refund',
          title: 'Refund ' + yuan(r.amount) + ' ' + ({ success: 'completed', failed: 'failed', replaced: 'replaced' }[r.status]),
          outcome: r.status,
          body: [r.refundId ? 'refund id ' + r.refundId : null, r.lastError, r.attempts ? r.attempts + ' attempt(s)' : null].filter(Boolean).join(' · '),
          tone: r.status === 'success' ? 'good' : r.status === 'replaced' ? null : 'bad',
          actions: r.status === 'failed' ? [{
            text: 'Retry refund',
            testid: 'refund-retry',
            label: 'Retry refund ' + r.outRefundNo,
            run: (button) => retryRefund(o.orderNumber, r.outRefundNo, button),
          }, {
            text: 'Replace refund',
            testid: 'refund-replace',
            label: 'Replace refund ' + r.outRefundNo + ' with a new number (only if WeChat proves it never paid it)',
            run: (button) => replaceRefund(o.orderNumber, r.outRefundNo, button),
          }] : null,
        });
      } else {
        if (opened && r.lastError) opened.body += ' · last error: ' + r.lastError;
        if (opened && isWaitingForFunds(r)) opened.hint = NOTENOUGH_HINT;
      }
    }
    for (const n of history.notifications || []) {
      const shown = NOTIFICATION_STATUS[n.status] || { label: n.status, tone: 'warn' };
      add(n.sentAt || n.createdAt, {
        kind: 'notification',
        title: 'Buyer notified: ' + (NOTIFICATION_EVENT[n.event] || n.event),
        outcome: shown.label,
        body: [n.templateId, Object.values(n.data || {}).map((v) => v && v.value).filter(Boolean).join(' · '),
          n.lastError, n.attempts > 1 ? n.attempts + ' tries' : null].filter(Boolean).join(' — '),
        tone: shown.tone,
      });
    }
    if (o.closedAt) add(o.closedAt, { kind: 'order', title: 'Closed', body: 'expired unpaid' });
    entries.sort((a, b) => a.time - b.time || a.seq - b.seq);
    return entries;
  }

  const NOTIFICATION_EVENT = { delivered: 'top-up arrived', refunding: 'money on its way back', refunded: 'refund completed' };
  const NOTIFICATION_STATUS = {
    sent: { label: 'sent', tone: 'good' },
    recorded: { label: 'recorded (sandbox: not sent)', tone: '' },
    unsubscribed: { label: 'not subscribed', tone: '' },
    pending: { label: 'retrying', tone: 'warn' },
    failed: { label: 'not sent', tone: 'bad' },
  };

  function sourceLabel(source) {
    return { operator: 'by an operator', auto_failed: 'automatic: top-up failed', auto_closed: 'automatic: paid after closing' }[source] || source;
  }

  function prettyJson(text) {
    try { return JSON.stringify(JSON.parse(text), null, 2); } catch (e) { return text; }
  }

  function renderEntry(e) {
    const li = h('li', {
      class: 'tl k-' + e.kind + (e.tone === 'good' || e.tone === 'bad' ? ' ' + e.tone : ''),
      'data-testid': 'timeline-entry',
      'data-kind': e.kind,
      'data-outcome': e.outcome || null,
    },
    h('div', { class: 'tl-head' },
      h('span', { class: 'tl-kind', text: e.kind }),
      h('span', { class: 'tl-title', text: e.title }),
      e.outcome ? h('span', { class: 'tag ' + (e.tone || ''), text: e.outcome }) : null,
      h('span', { class: 'tl-time' }, timeEl(e.at, preciseFormat))));
    if (e.body) li.append(h('div', { class: 'tl-body', text: e.body }));
    if (e.hint) li.append(h('div', { class: 'tl-hint', 'data-testid': 'refund-waiting', text: e.hint }));
    const actions = e.actions || (e.action ? [e.action] : []);
    if (actions.length) {
      li.append(h('div', { class: 'tl-actions' }, ...actions.map((action) => h('button', {
        type: 'button', class: 'secondary small', 'data-testid': action.testid, 'aria-label': action.label || null, text: action.text,
        onclick: (ev) => action.run(ev.currentTarget),
      }))));
    }
    if (e.raw) {
      li.append(h('details', null, h('summary', { text: 'Headers and body' }),
        h('pre', { text: prettyJson(e.raw.headers) }),
        h('pre', { text: prettyJson(e.raw.body) })));
    }
    return li;
  }

  async function runJob(kind, button) {
    const path = kind === 'compensate' ? '/jobs/compensate' : '/jobs/reconcile';
    const title = kind === 'compensate' ? 'Compensation sweep' : 'Reconciliation';
    await busy(button, async () => {
      const report = await api(path, { method: 'POST', as: 'admin' });
      $('job-report-title').textContent = title + ' at ' + timeFormat.format(new Date());
      $('job-report-body').textContent = JSON.stringify(report, null, 2);
      $('job-report').hidden = false;
      refreshOperator();
    });
  }


  // ---------------------------------------------------------------------------------------------
  // Operator: catalog

  /** The product fields an operator edits, in form order: [field, label, input type, hint]. */
  const PRODUCT_FIELDS = [
    ['name', 'Name', 'text', 'Shown to buyers'],
    ['price', 'Price (yuan)', 'text', 'e.g. 12.00'],
    ['faceValue', 'Face value', 'text', 'What the phone receives'],
    ['faceCurrency', 'Currency', 'text', 'ISO 4217, e.g. MNT'],
    ['country', 'Country', 'text', 'ISO 3166-1, e.g. MN'],
    ['carrier', 'Carrier', 'text', 'Shown to buyers'],
    ['carrierReference', 'Carrier reference', 'text', 'What the carrier calls it (an operator id, a SKU)'],
    ['sortOrder', 'Position', 'number', 'Lower comes first'],
    ['description', 'Description', 'text', ''],
  ];

  async function loadCatalog() {
    const list = $('catalog-list');
    try {
      state.catalog.products = await api('/admin/products', { as: 'admin' });
    } catch (e) {
      clear(list).append(h('p', { class: 'muted', text: 'The catalog could not be loaded: ' + e.message }));
      return;
    }
    renderCatalog();
  }

  function renderCatalog() {
    const products = state.catalog.products;
    const selling = products.filter((p) => p.enabled).length;
    const count = $('catalog-count');
    count.textContent = products.length ? selling + ' of ' + products.length + ' on sale' : 'empty';
    count.className = 'pill ' + (selling ? 'ok' : 'bad');
    const list = clear($('catalog-list'));
    if (!products.length) {
      list.append(h('p', { class: 'empty', 'data-testid': 'catalog-empty',
        text: 'No products yet: buyers see nothing to order. (Production starts with an empty catalog.) Add the first one below.' }));
    }
    products.forEach((p, index) => {
      list.append(h('div', {
        class: 'catalog-row' + (p.enabled ? '' : ' disabled'),
        'data-testid': 'catalog-row',
        'data-product-id': p.id,
        'data-code': p.code,
      },
      h('div', {},
        h('div', { class: 'catalog-name', text: p.name }),
        h('div', { class: 'catalog-meta mono', text: p.code + ' · ' + p.carrier + ' · ' + (p.country || '—') + ' · ref ' + p.carrierReference })),
      h('div', {},
        h('div', { 'data-testid': 'catalog-price', text: yuan(p.price) }),
        h('div', { class: 'catalog-meta', text: p.faceValue + ' ' + p.faceCurrency })),
      h('div', {}, h('span', { class: 'tag ' + (p.enabled ? 'good' : ''), 'data-testid': 'catalog-enabled',
        text: p.enabled ? 'on sale' : 'not on sale' })),
      h('div', { class: 'buttons' },
        h('button', { type: 'button', class: 'secondary small', text: '↑', 'aria-label': 'Move ' + p.name + ' up',
          disabled: index === 0, onclick: (ev) => moveProduct(index, -1, ev.currentTarget) }),
        h('button', { type: 'button', class: 'secondary small', text: '↓', 'aria-label': 'Move ' + p.name + ' down',
          disabled: index === products.length - 1, onclick: (ev) => moveProduct(index, 1, ev.currentTarget) }),
        h('button', { type: 'button', class: 'secondary small', 'data-testid': 'catalog-toggle',
          text: p.enabled ? 'Stop selling' : 'Sell', onclick: (ev) => saveProduct(p, { enabled: !p.enabled }, ev.currentTarget) }),
        h('button', { type: 'button', class: 'secondary small', 'data-testid': 'catalog-edit', text: 'Edit',
          onclick: () => editProduct(p) }),
        h('button', { type: 'button', class: 'link-button', 'data-testid': 'catalog-history', text: 'Changes',
          onclick: () => showChanges(p) }))));
    });
  }

  /** The form for a new product (`product` null) or for editing one. */
  function editProduct(product) {
    const editor = clear($('catalog-editor'));
    const form = h('form', { class: 'catalog-form', 'data-testid': 'catalog-form', novalidate: true });
    const fields = product ? PRODUCT_FIELDS : [['code', 'Code', 'text', 'Unique, e.g. UNITEL-5000'], ...PRODUCT_FIELDS];
    for (const [name, label, type, hint] of fields) {
      const value = product ? product[name] : '';
      form.append(h('label', { class: 'field' + (name === 'description' ? ' wide' : '') },
        h('span', { text: label }),
        h('input', { name, type, value: value === undefined || value === null ? '' : value,
          'data-testid': 'catalog-field-' + name, autocomplete: 'off', spellcheck: 'false', placeholder: hint })));
    }
    const save = h('button', { type: 'submit', class: 'primary small', 'data-testid': 'catalog-save',
      text: product ? 'Save changes' : 'Add product' });
    form.append(h('div', { class: 'form-buttons' }, save,
      h('button', { type: 'button', class: 'secondary small', text: 'Cancel',
        onclick: () => { editor.hidden = true; clear(editor); } })));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const body = {};
      for (const [name] of fields) {
        const raw = form.elements[name].value.trim();
        const value = name === 'sortOrder' ? (raw === '' ? undefined : Number(raw)) : raw;
        if (value === undefined) continue;
        if (!product && name === 'description' && value === '') continue;
        if (!product && name === 'sortOrder' && raw === '') continue;
        if (product && String(product[name] ?? '') === raw) continue;
        body[name] = value;
      }
      saveProduct(product, body, save);
    });
    editor.append(h('h3', { text: product ? 'Edit ' + product.name : 'New product' }), form);
    editor.hidden = false;
    reveal(editor);
  }

  /** Creates (`product` null) or changes a product, then shows the catalog and the buyer's list anew. */
  async function saveProduct(product, body, button) {
    await busy(button, async () => {
      if (product && !Object.keys(body).length) {
        notify('Nothing changed.', 'ok');
        return;
      }
      const saved = product
        ? await api('/admin/products/' + product.id, { method: 'PATCH', as: 'admin', body })
        : await api('/admin/products', { method: 'POST', as: 'admin', body });
      notify((product ? 'Saved ' : 'Added ') + saved.name + '.', 'ok');
      $('catalog-editor').hidden = true;
      clear($('catalog-editor'));
      await loadCatalog();
      if (state.catalog.changesFor === saved.id) showChanges(saved);
      loadProducts();
    });
  }

  async function moveProduct(index, step, button) {
    const ids = state.catalog.products.map((p) => p.id);
    const other = index + step;
    if (other < 0 || other >= ids.length) return;
    [ids[index], ids[other]] = [ids[other], ids[index]];
    await busy(button, async () => {
      state.catalog.products = await api('/admin/products/reorder', { method: 'POST', as: 'admin', body: { ids } });
      renderCatalog();
      loadProducts();
    });
  }

  /** What a change changed, field by field. */
  function changeSummary(change) {
    if (change.action === 'created') return 'created at ' + yuan(change.after.price);
    if (change.action === 'demo_removed') return 'demo product removed (production starts empty)';
    const before = change.before || {};
    const after = change.after || {};
    const changed = Object.keys(after).filter((k) => JSON.stringify(before[k]) !== JSON.stringify(after[k]));
    return changed.map((k) => k + ' ' + JSON.stringify(before[k]) + ' → ' + JSON.stringify(after[k])).join('; ') || change.action;
  }

  async function showChanges(product) {
    const box = $('catalog-changes');
    state.catalog.changesFor = product.id;
    let changes;
    try {
      changes = await api('/admin/products/' + product.id + '/changes', { as: 'admin' });
    } catch (e) {
      fail(e);
      return;
    }
    clear(box).append(h('h3', { text: 'Changes to ' + product.name }),
      h('ul', {}, changes.map((c) => h('li', { 'data-testid': 'catalog-change', 'data-action': c.action },
        timeEl(c.changedAt), ' ', h('span', { class: 'tag', text: c.actor }), ' ', changeSummary(c)))));
    box.hidden = false;
  }

  // ---------------------------------------------------------------------------------------------
  // Start

  function wire() {
    for (const tab of document.querySelectorAll('.tab')) {
      tab.addEventListener('click', () => showView(tab.dataset.view));
    }
    window.addEventListener('hashchange', () => showView(location.hash.slice(1)));
    $('notice-close').addEventListener('click', clearNotice);

    const buyer = $('buyer-id');
    buyer.value = storageGet(STORE.buyer) || 'console-buyer';
    buyer.addEventListener('change', () => {
      const id = buyer.value.trim() || 'console-buyer';
      buyer.value = id;
      storageSet(STORE.buyer, id);
      stopPolling();
      state.current = null;
      setPollNote('');
      renderCurrent();
      loadMyOrders();
    });
    $('phone').addEventListener('input', (ev) => ev.target.removeAttribute('aria-invalid'));
    $('order-form').addEventListener('submit', placeOrder);
    $('pay').addEventListener('click', pay);
    $('my-orders-refresh').addEventListener('click', loadMyOrders);

    $('token-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      storageSet(STORE.token, $('admin-token').value.trim() || null);
      clearNotice();
      refreshOperator();
    });
    $('token-forget').addEventListener('click', () => {
      storageSet(STORE.token, null);
      $('admin-token').value = '';
    });
    $('filters').addEventListener('submit', (ev) => {
      ev.preventDefault();
      state.admin.page = 1;
      loadAdminOrders();
    });
    $('filter-status').addEventListener('change', () => { state.admin.page = 1; loadAdminOrders(); });
    $('filter-anomaly').addEventListener('change', () => { state.admin.page = 1; loadAdminOrders(); });
    $('filter-refund-failed').addEventListener('change', () => { state.admin.page = 1; loadAdminOrders(); });
    $('recon-refresh').addEventListener('click', refreshOverview);
    $('stats-range').addEventListener('submit', applyStatsRange);
    $('stats-default').addEventListener('click', () => {
      clearNotice();
      state.stats.range = null;
      loadStats();
    });
    for (const id of ['stats-from', 'stats-to']) {
      $(id).addEventListener('input', (ev) => ev.target.removeAttribute('aria-invalid'));
    }
    $('job-compensate').addEventListener('click', (ev) => runJob('compensate', ev.currentTarget));
    $('job-reconcile').addEventListener('click', (ev) => runJob('reconcile', ev.currentTarget));
    $('job-report-close').addEventListener('click', () => { $('job-report').hidden = true; });
    $('catalog-add').addEventListener('click', () => editProduct(null));
  }

  async function boot() {
    wire();
    try {
      state.config = await api('/console/config.json');
    } catch (e) {
      $('boot').textContent = 'The console could not start: ' + e.message;
      return;
    }
    const badges = clear($('env-badges'));
    badges.append(h('span', { class: 'env-badge ' + (state.config.development ? 'development' : 'production'),
      text: state.config.development ? 'development' : 'production' }));
    if (state.config.sandbox) badges.append(h('span', { class: 'env-badge sandbox', text: 'sandbox' }));
    $('sandbox-carrier-hint').hidden = !state.config.sandbox;
    if (!state.config.development) {
      $('buyer-id-hint').textContent = 'Production trusts only identities injected by WeChat: buyer calls from this page are refused.';
    }
    $('token-box').hidden = !!state.config.adminToken || !!storageGet(STORE.token);
    $('boot').hidden = true;
    document.body.dataset.ready = 'true';
    renderCurrent();
    showView(location.hash.slice(1));
    loadProducts();
    loadMyOrders();
  }

  boot();
})();
