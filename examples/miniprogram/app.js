App({
  globalData: {
    // Edit these: your WeChat Cloud Hosting environment id and service name.
    env: 'prod-xxxx',
    service: 'wxtopup',
    // The subscribe message template ids the service sends (SUBSCRIBE_TEMPLATE_DELIVERED,
    // _REFUNDING, _REFUNDED); empty: the buyer is not asked.
    subscribeTemplates: []
  },

  onLaunch() {
    wx.cloud.init();
  }
});
