App({
  globalData: {
    // Edit these: your WeChat Cloud Hosting environment id and service name.
    env: 'prod-xxxx',
    service: 'wxtopup'
  },

  onLaunch() {
    wx.cloud.init();
  }
});
